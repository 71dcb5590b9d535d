"""Every notebook executes under papermill at the smoke budget; parameters cells are documented."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pytest

from vlmlab.sweep import RunFailed, execute_notebook

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert any(p.name == "run.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_is_literal_and_documented(nb, papermill_help):
    cells = [c for c in nbformat.read(nb, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "exactly one cell tagged 'parameters'"
    names = []
    for line in cells[0].source.splitlines():
        if not line.strip():
            continue
        assert "#" in line, f"parameter without a comment: {line}"
        name, value = line.split("#")[0].split("=", 1)
        ast.literal_eval(value.strip())  # literal only: papermill does not recompute derived values
        names.append(name.split(":")[0].strip())
    assert "budget" in names
    out = papermill_help(nb).stdout
    for n in names:
        assert n in out


def test_run_notebook_smoke(tmp_path):
    rec = execute_notebook(ROOT / "notebooks" / "run.ipynb", tmp_path / "run",
                           {"arch": "llava", "budget": "smoke", "seed": 1})
    assert (tmp_path / "run" / "run.ipynb").is_file()
    assert json.loads((tmp_path / "run" / "record.json").read_text()) == rec
    nb = nbformat.read(tmp_path / "run" / "run.ipynb", as_version=4)
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2  # accuracy bars and loss curves


def test_bad_parameter_message_reaches_the_papermill_user(tmp_path):
    with pytest.raises(RunFailed, match=r"arch='lava'.*allowed values"):
        execute_notebook(ROOT / "notebooks" / "run.ipynb", tmp_path / "bad", {"arch": "lava", "budget": "smoke"})
    err = json.loads((tmp_path / "bad" / "error.json").read_text())
    assert "allowed values" in err["error"]
    assert not (tmp_path / "bad" / "record.json").exists()


def test_cli_run_builds_missing_backbones_in_view_then_prints_the_table(tmp_path, monkeypatch, capsys):
    from vlmlab import cli

    monkeypatch.setenv("VLMLAB_CACHE", str(tmp_path / "cache"))  # nothing cached: the first run of a new user
    assert cli.main(["run", "--budget", "smoke", "--out", str(tmp_path / "run")]) == 0
    out, err = capsys.readouterr()
    # the terminal says what the long first step is, instead of one silent notebook cell
    assert "building the LM backbone" in err and "built CL" in err
    assert "attribute" in out and "overall" in out and (tmp_path / "run" / "record.json").is_file()
