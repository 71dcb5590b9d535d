"""Notebook 40 builds a real-format dataset (exported world scenes and scikit-image's sample photos, as LLaVA JSON
and as a datasets directory), trains on it at the smoke budget and scores its generated answers."""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks" / "40_real_data.ipynb"


@pytest.mark.slow
def test_real_data_notebook_smoke(tmp_path):
    import papermill as pm

    assert not any(c.get("outputs") for c in nbformat.read(NB, as_version=4).cells), "commit notebooks clean"
    work = tmp_path / "work"
    # the kernel inherits VLMLAB_CACHE from conftest: smoke backbones come from the session's temporary cache
    pm.execute_notebook(str(NB), str(tmp_path / NB.name), parameters={"budget": "smoke", "work_dir": str(work)},
                        kernel_name="python3", cwd=str(tmp_path), progress_bar=False, log_output=False)
    outputs = [o for c in nbformat.read(tmp_path / NB.name, as_version=4).cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "broken.json, row 3: image" in text and "(1 more bad rows)" in text  # caught before training
    assert "train_hf                 hf    28 examples: checked" in text
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # the photos, and their answers
    rec = json.loads((work / "run" / "record.json").read_text())
    assert rec["data"]["train"]["examples"] == 28 and rec["data"]["eval"]["examples"] == 20
    assert "photo" in rec["metrics"]["eval"] and "photo" in rec["chance"] and "photo" in rec["first_token"]["eval"]
    assert rec["generation"]["max_new_tokens"] == 4 and len(rec["generation"]["examples"]) == 8
