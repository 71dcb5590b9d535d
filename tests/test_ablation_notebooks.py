"""The ablation notebooks (20-23) and the comparison notebook (30) execute under papermill at the smoke budget
with small grids (2 seeds, 2-4 configurations, the in-process executor, one temporary run store shared by the
five), leave their figures and computed Markdown conclusions, and document their parameters."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMON = {"budget": "smoke", "n_seeds": 2, "executor": "inprocess"}
# notebook -> its grid overrides (small, and overlapping so that the five share runs through the store)
NOTEBOOKS = {
    "20_ablation_table_size.ipynb": {"table_sizes": [16, 256]},
    "21_ablation_indexings.ipynb": {"indexings": [1, 0]},
    "22_ablation_attention.ipynb": {"archs": ["llavit", "llava"]},
    "23_ablation_features.ipynb": {"xformer_features": ["cl", "both"], "llava_encoders": ["mim"]},
    "30_comparison.ipynb": {"archs": ["llava", "ovis", "llavit"]},
}
EXECUTED: set = set()  # notebooks whose smoke test passed in this session


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("study-store")


def outputs(path):
    return [o for c in nbformat.read(path, as_version=4).cells for o in c.get("outputs", [])]


@pytest.mark.parametrize("name", list(NOTEBOOKS), ids=str)
def test_ablation_notebook_smoke(name, store, tmp_path):
    import papermill as pm

    src = ROOT / "notebooks" / name
    assert not any(c.get("outputs") for c in nbformat.read(src, as_version=4).cells), "commit notebooks clean"
    out = tmp_path / name
    params = {**COMMON, **NOTEBOOKS[name], "store": str(store)}
    pm.execute_notebook(str(src), str(out), parameters=params, kernel_name="python3", cwd=str(tmp_path),
                        progress_bar=False, log_output=False)
    outs = outputs(out)
    assert not [o for o in outs if o.get("output_type") == "error"]
    images = [o for o in outs if "image/png" in o.get("data", {})]
    assert len(images) >= 3, f"{name}: {len(images)} figures"  # test + compositional split, diagnostics
    md = [o["data"]["text/markdown"] for o in outs if "text/markdown" in o.get("data", {})]
    computed = [m for m in md if "scores" in m or "Ranking" in m]
    assert computed, "no computed conclusions"
    # the conclusions carry measured numbers (mean ± sd over the 2 seeds), and the paper's side is shown too
    assert re.search(r"\d+\.\d ± \d+\.\d %", computed[0])
    assert any("What the papers reported" in m for m in md)
    text = "".join(o.get("text", "") for o in outs if o.get("output_type") == "stream")
    assert "0 failed" in text
    if name == "30_comparison.ipynb":  # the per-wording table, with a row per wording of the four categories
        html = "".join(o["data"].get("text/html", "") for o in outs if "data" in o)
        assert "comparison: is the &lt;shape&gt; bigger than the &lt;shape&gt; ?" in html
        assert [html.count(f"<th>{c}: ") for c in ("spatial", "counting", "comparison", "logical")] == [2, 2, 2, 2]
    # every run this notebook needed is in the shared store
    assert len(list((store / "study-smoke").glob("*/record.json"))) >= 4
    EXECUTED.add(name)


def test_shared_store_holds_each_run_once(store):
    """After the five notebooks: the runs they have in common (e.g. default-knob LLaVA, LLaViT and Ovis in the
    comparison and the ablations) exist once; the store holds exactly the distinct configurations x seeds."""
    from vlmlab import study as S

    if EXECUTED != set(NOTEBOOKS):
        pytest.skip("needs the five notebook smoke tests of this session (it reads the store they filled)")
    studies = [S.table_size_study([16, 256], [0, 1], "smoke", store), S.indexings_study([1, 0], 256, [0, 1], "smoke",
                                                                                           store),
               S.attention_study(["llavit", "llava"], ["causal", "bidirectional"], [0, 1], "smoke", store),
               S.features_study(["cl", "both"], ["mim"], [0, 1], "smoke", store),
               S.comparison_study(["llava", "ovis", "llavit"], [0, 1], "smoke", store)]
    wanted = {rd for st in studies for _, _, rd in st.runs()}
    total = sum(len(st.runs()) for st in studies)
    assert total > len(wanted)  # the studies overlap ...
    have = {p.parent for p in (store / "study-smoke").glob("*/record.json")}
    assert have == wanted  # ... and every shared run was executed into one directory


@pytest.mark.parametrize("name", list(NOTEBOOKS), ids=str)
def test_help_notebook_documents_every_parameter(name, papermill_help):
    src = ROOT / "notebooks" / name
    cell = [c for c in nbformat.read(src, as_version=4).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cell) == 1
    out = papermill_help(src)
    assert "Unable to parse" not in out.stdout + out.stderr
    help_text = re.sub(r"\s+", " ", out.stdout)
    params = {}
    for line in cell[0].source.splitlines():
        m = re.match(r"^(\w+): \w+ = .*?  # (.+)$", line)
        assert m, f"parameter line without a type annotation or a comment: {line}"
        params[m.group(1)] = m.group(2)
    assert {"budget", "seed", "n_seeds", "workers", "threads", "executor", "store"} <= set(params)
    for p, comment in params.items():
        assert re.search(rf"\b{p}: \w+ \(default ", help_text), p
        assert comment in help_text, (p, comment)
