"""The docs' tables are generated from the committed CSVs: a doc that drifts from its data fails here."""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from vlmlab.doctables import REPO, render_text


def _tidy(path, seeds=(0, 1)):
    rows = []
    for s in seeds:
        for src, v in (("model", 0.6 + s / 10), ("floor", 0.5), ("ceiling", 0.9 + s / 100), ("chance", 0.5)):
            rows.append({"run": f"r{s}", "arch": "llava", "seed": s, "budget": "default", "source": src,
                         "split": "test", "metric": "accuracy.spatial", "value": v})
    for name in ("world-v2.csv", "comparison.csv"):
        pd.DataFrame(rows).to_csv(path / name, index=False)


def test_marked_blocks_are_regenerated_and_the_rest_is_kept(tmp_path):
    _tidy(tmp_path)
    doc = "intro\n<!-- floor-ceiling:begin -->\nstale 12.3\n<!-- floor-ceiling:end -->\noutro\n"
    out = render_text(doc, tmp_path)
    assert out.startswith("intro\n<!-- floor-ceiling:begin -->\n") and out.endswith("<!-- floor-ceiling:end -->\noutro\n")
    assert "stale" not in out and "| spatial |" in out
    assert "90.5 ± 0.7" in out  # the ceiling's mean ± sd over seeds 0 and 1, from the CSV
    assert render_text(out, tmp_path) == out  # idempotent
    with pytest.raises(ValueError, match="unknown generated table"):
        render_text("<!-- nope:begin -->\n<!-- nope:end -->", tmp_path)


def test_committed_docs_match_their_data():
    r = subprocess.run([sys.executable, str(REPO / "tools" / "render_docs.py"), "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr


def test_the_figures_are_drawn_from_the_csvs(tmp_path):
    from vlmlab.doctables import FIGURES, render_figures

    _tidy(tmp_path)
    written = render_figures(tmp_path / "figures", tmp_path)
    assert [p.name for p in written] == list(FIGURES)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    (tmp_path / "comparison.csv").write_text("run,arch,seed,budget,source,split,metric,value\n")
    with pytest.raises(ValueError, match="no model accuracy"):
        render_figures(tmp_path / "empty", tmp_path)


def test_a_recipe_is_compared_with_the_recipe_one_knob_away():
    from vlmlab.doctables import _one_knob_controls

    def row(**knobs):
        return {"arch": "ovis", **{f"knob.{k}": v for k, v in knobs.items()}}
    raw = pd.DataFrame([row(vit="frozen", table_size=256), row(vit="trained", table_size=256),
                        row(vit="trained", table_size=4096), row(vit="frozen", table_size=4096, qa_share=0.5)])
    c = _one_knob_controls(raw)
    assert "ovis: default" not in c  # the default is the reference, with no control of its own
    assert c["ovis: vit=trained"] == "ovis: default"
    # two one-knob neighbours (vit=trained; table_size=4096 alone is absent): the one nearer the default
    assert c["ovis: table_size=4096, vit=trained"] == "ovis: vit=trained"
    assert c["ovis: qa_share=0.5, table_size=4096"] == "ovis: default"  # no one-knob neighbour: the default


def _runs(path, name, runs):
    """A tidy CSV of ``runs``: (arch, knobs, seed, overall accuracy) with the floor at 0.4."""
    rows = []
    for i, (arch, knobs, seed, acc) in enumerate(runs):
        for src, v in (("model", acc), ("floor", 0.4), ("ceiling", 0.95), ("chance", 0.38)):
            rows.append({"run": f"{name}{i}", "arch": arch, "seed": seed, "budget": "default", "source": src,
                         "split": "test", "metric": "accuracy.overall", "value": v,
                         **{f"knob.{k}": val for k, val in knobs.items()}})
    pd.DataFrame(rows).to_csv(path / f"{name}.csv", index=False)


def test_comparison_and_claims_tables_pair_the_seeds(tmp_path):
    seeds = range(5)
    _runs(tmp_path, "comparison", [("llava", {}, s, 0.70 + s / 100) for s in seeds]
          + [("vwlmm", {"lambda_vm": 1.0}, s, 0.72 + s / 100 + (s % 2) / 200) for s in seeds])
    _runs(tmp_path, "claims", [("vwlmm", {"lambda_vm": 0.0}, s, 0.66 + s / 100) for s in seeds])
    _runs(tmp_path, "ablations", [("ovis", {"table_size": k}, s, 0.6 + (k > 256) / 50 + s / 100)
                                  for k in (256, 4096) for s in range(3)])
    out = render_text("<!-- comparison-vs-llava:begin -->\n<!-- comparison-vs-llava:end -->\n"
                      "<!-- claims:begin -->\n<!-- claims:end -->\n"
                      "<!-- ablation-headlines:begin -->\n<!-- ablation-headlines:end -->\n", tmp_path)
    heads = out.split("<!-- ablation-headlines:begin -->")[1].splitlines()
    k = next(line for line in heads if "4,096" in line)  # 3 seeds: the interval, not yet a reading
    assert "| +2.0 [+2.0, +2.0] | 3 |" in k and "| too few seeds |" in k
    assert "not measured yet" in next(line for line in heads if "LLaViT" in line)
    vs = out.split("<!-- comparison-vs-llava:end -->")[0]
    assert "| vwlmm | +2.2 [+1.9, +2.5] |" in vs and "| ahead | +34.2" in vs  # paired: the seed trend cancels
    claims = out.split("<!-- claims:begin -->")[1]
    lam = next(line for line in claims.splitlines() if "lambda > 0" in line)
    assert "+6.2 [+5.9, +6.5]" in lam and lam.endswith("| reproduced |")
    assert "not measured yet" in next(line for line in claims.splitlines() if "LLaViT" in line)
