"""vlmlab.study: studies share one run store (identical runs execute once, whichever notebook or executor asks
first), records become a tidy frame, conclusions are sentences computed from the numbers, plots carry sd error
bars over seeds with the floor and the ceiling."""
from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest

from vlmlab import study as S
from vlmlab.archs import backbones_needed
from vlmlab.jsonio import write_json_atomic
from vlmlab.results import ROWS
from vlmlab.sweep import SweepSpec, SweepSpecError, read_record
from vlmlab.world import CATEGORIES

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]


# ---- configurations and the shared store ---------------------------------------------------------------------
def test_canonical_knobs_drop_defaults_and_validate():
    assert S.canonical_knobs("llava", {"attention": "causal"}) == {}
    assert S.canonical_knobs("llava", {"attention": "bidirectional"}) == {"attention": "bidirectional"}
    assert S.canonical_knobs("llavit", {"attention": "bidirectional"}) == {}  # LLaViT's default
    assert S.canonical_knobs("ovis", {"table_size": 256, "indexings": 0}) == {}
    assert S.canonical_knobs("xformer", {"mae_mask_ratio": 0.5}) == {}
    assert S.canonical_knobs("ovis", {"table_size": 16}) == {"table_size": 16}
    with pytest.raises(ValueError, match="table_size"):
        S.canonical_knobs("ovis", {"table_size": 16, "indexings": 32})  # top-k larger than the table
    with pytest.raises(ValueError, match="do not apply"):
        S.canonical_knobs("llava", {"table_size": 16})


def test_identical_runs_share_one_directory(tmp_path):
    seeds = [0, 1]
    att = S.attention_study(["llava", "llavit", "hovle"], ["causal", "bidirectional"], seeds, "smoke", tmp_path)
    cmp_ = S.comparison_study(S.COMPARISON_ARCHS, seeds, "smoke", tmp_path)
    size = S.table_size_study([16, 256], seeds, "smoke", tmp_path)
    idx = S.indexings_study([1, 0], 256, seeds, "smoke", tmp_path)
    dirs = {name: {(c.name, p["seed"]): rd for c, p, rd in st.runs()}
            for name, st in (("att", att), ("cmp", cmp_), ("size", size), ("idx", idx))}
    for s in seeds:  # default-knob runs are the same run in every study that contains them
        assert dirs["att"][("llava (causal)", s)] == dirs["cmp"][("llava", s)]
        assert dirs["att"][("llavit (bidirectional)", s)] == dirs["cmp"][("llavit", s)]
        assert dirs["att"][("hovle (causal)", s)] == dirs["cmp"][("hovle", s)]
        assert dirs["size"][("K=256", s)] == dirs["idx"][("dense (k=K=256)", s)] == dirs["cmp"][("ovis", s)]
        assert dirs["att"][("llava (bidirectional)", s)] != dirs["att"][("llava (causal)", s)]
    assert dirs["cmp"][("llava", 0)] != dirs["cmp"][("llava", 1)]
    assert all(rd.parent == tmp_path / "study-smoke" for d in dirs.values() for rd in d.values())
    other = S.comparison_study(["llava"], [0], "default", tmp_path)  # the budget is part of the hash and the path
    assert other.runs()[0][2].parent == tmp_path / "study-default"
    # the study's directories are exactly those the sweep engine computes
    spec = att.spec()
    assert {spec.run_dir(p) for p in spec.runs()} == set(dirs["att"].values())


def test_study_rejects_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="same run"):
        S.Study("x", [S.Case("llava", {}), S.Case("llava", {"attention": "causal"})], [0], "smoke", tmp_path)
    with pytest.raises(ValueError, match="budget"):
        S.comparison_study(["llava"], [0], "huge", tmp_path)
    with pytest.raises(ValueError, match="attention-type knob"):
        S.attention_study(["ovis"], ["causal"], [0], "smoke", tmp_path)
    with pytest.raises(ValueError, match="allowed values"):
        S.features_study(["clip"], [], [0], "smoke", tmp_path)
    with pytest.raises(ValueError, match="n_seeds"):
        S.seeds_from(0, 0)
    st = S.comparison_study(["llava"], [0], "smoke", tmp_path)
    with pytest.raises(ValueError, match="executor.*allowed values"):
        S.run_study(st, executor="threads")


def test_sweep_cases_are_validated_and_expanded():
    nb = ROOT / "notebooks" / "run.ipynb"
    spec = SweepSpec(notebook=nb, name="t", fixed={"budget": "smoke"}, seeds=[0, 1],
                     cases=[{"arch": "llava", "knobs.attention": "bidirectional"}, {"arch": "ovis"}])
    runs = spec.runs()
    assert runs[0] == {"budget": "smoke", "arch": "llava", "knobs": {"attention": "bidirectional"}, "seed": 0}
    assert [r["seed"] for r in runs] == [0, 0, 1, 1] and runs[1] == {"budget": "smoke", "arch": "ovis", "seed": 0}
    with pytest.raises(SweepSpecError, match=r"cases\[0\]\.budget"):
        SweepSpec(notebook=nb, name="t", fixed={"budget": "smoke"}, cases=[{"budget": "default"}])
    with pytest.raises(SweepSpecError, match=r"cases\[0\]\.colour"):
        SweepSpec(notebook=nb, name="t", cases=[{"colour": "red"}])
    with pytest.raises(SweepSpecError, match="same parameters"):
        SweepSpec(notebook=nb, name="t", cases=[{"arch": "llava"}, {"arch": "llava"}])


def test_runs_execute_once_across_studies_and_executors(tmp_path):
    """Real smoke training: the papermill executor trains LLaVA seed 0 for the comparison; the attention study
    (in-process) then reuses it and trains only its bidirectional run; a rerun trains nothing."""
    cmp_ = S.comparison_study(["llava"], [0], "smoke", tmp_path)
    r1 = S.run_study(cmp_, executor="papermill", workers=1, threads=1, progress=False)
    assert len(r1.done) == 1 and not r1.failed, S.describe_result(r1, cmp_)
    rd = cmp_.runs()[0][2]
    assert (rd / "run.ipynb").is_file() and (rd / "params.json").is_file()
    mtime = (rd / "record.json").stat().st_mtime_ns

    att = S.attention_study(["llava"], ["causal", "bidirectional"], [0], "smoke", tmp_path)
    r2 = S.run_study(att, executor="inprocess", progress=False)
    assert [o.run_dir for o in r2.skipped] == [rd]
    assert len(r2.done) == 1 and r2.done[0].params["knobs"] == {"attention": "bidirectional"}
    assert (rd / "record.json").stat().st_mtime_ns == mtime  # the shared run was not retrained
    assert json.loads((r2.done[0].run_dir / "params.json").read_text()) == r2.done[0].params

    r3 = S.run_study(att, executor="inprocess", progress=False)
    assert not r3.done and len(r3.skipped) == 2
    assert len(list((tmp_path / "study-smoke").glob("*/record.json"))) == 2
    manifest = json.loads((tmp_path / "study-smoke" / "studies" / "attention.json").read_text())
    assert set(manifest["runs"]) == {o.run_dir.name for o in r3.skipped}

    frame = S.accuracy_frame(att)
    assert set(frame["config"]) == {"llava (causal)", "llava (bidirectional)"}
    assert set(frame["source"]) == {"model", "floor", "ceiling", "chance"}
    assert frame["accuracy"].between(0, 100).all()
    assert S.mixed_backbones(att) is None


# ---- records -> frame -> conclusions (synthetic records, no training) ----------------------------------------
def fake_record(arch, knobs, seed, acc: dict, floor=0.40, ceiling=0.85) -> dict:
    """A record with the fields the study reads; per-category accuracy given as fractions."""
    def cats(v):
        d = {c: v for c in CATEGORIES}
        d.update(semantic=v, structural=v, overall=v)
        return d

    metrics = {split: {**cats(0.5), **{k: v for k, v in acc.items() if k != "bigger"}} for split in ("test", "compositional")}
    return {"config": {"arch": arch, "knobs": knobs, "seed": seed, "budget": "smoke"},
            "metrics": metrics, "chance": cats(0.3),
            "floor": {s: cats(floor) for s in ("test", "compositional")},
            "ceiling": {s: cats(ceiling) for s in ("test", "compositional")},
            "train_seconds": 10.0 + seed, "wall_seconds": 12.0, "samples_per_s": 100.0 + seed,
            "params": {"total": 1000, "trainable": 500},
            "diagnostics": {"ovis_effective_entries": 3.0 + seed, "answer_to_image_attention_map": [0.1]},
            "backbones": {"lm": "x"}, "wordings": {src: wordings(v) for src, v in
                                                 (("model", acc.get("bigger", 0.5)), ("floor", floor),
                                                  ("ceiling", ceiling))}}


def wordings(bigger: float) -> dict:
    """Per-wording accuracies as a record holds them: comparison's "bigger than" at ``bigger``, the rest (and
    chance) 0.5."""
    def d(v):
        return {"comparison": {"is the <shape> bigger than the <shape> ?": v,
                               "is the <shape> the same color as the <shape> ?": 0.5},
                "spatial": {"is the <shape> above the <shape> ?": 0.5, "is the <shape> left of the <shape> ?": 0.5}}
    return {"test": d(bigger), "compositional": d(bigger), "chance": d(0.5)}


def synthetic_study(tmp_path, a_overall, b_overall, a_counting=(0.9, 0.9, 0.9), b_counting=(0.5, 0.5, 0.5)):
    """Ovis K=16 ("A") and K=256 ("B") over 3 seeds with given overall accuracies, written into the store."""
    st = S.table_size_study([16, 256], [0, 1, 2], "smoke", tmp_path)
    for case, p, rd in st.runs():
        i = p["seed"]
        over, cnt = (a_overall, a_counting) if case.name == "K=16" else (b_overall, b_counting)
        write_json_atomic(rd / "record.json", fake_record("ovis", case.knobs, i, {"overall": over[i],
                                                                                    "counting": cnt[i]}))
    return st


def test_records_of_another_budget_definition_are_stale_and_retrained(tmp_path):
    """The store is keyed by the run's parameters, which name the budget but not what it holds: a record made
    under another definition of it (here: another evaluation size) is not reused, but set aside and retrained."""
    from vlmlab.budgets import get_budget

    st = S.table_size_study([16], [0, 1], "smoke", tmp_path)
    (_, _, old), (_, _, cur) = st.runs()
    write_json_atomic(cur / "record.json", {**fake_record("ovis", {"table_size": 16}, 1, {"overall": 0.6}),
                                            "budget": get_budget("smoke").as_dict()})
    stale = {**fake_record("ovis", {"table_size": 16}, 0, {"overall": 0.9}),
             "budget": {**get_budget("smoke").as_dict(), "eval_per_category": 3}}
    write_json_atomic(old / "record.json", stale)
    assert st.stale() == [old] and st.missing() == [old]
    assert [rd for *_, rd, _ in S.records(st)] == [cur]
    result = S.run_study(st, executor="inprocess", progress=False)
    assert [o.run_dir for o in result.done] == [old] and [o.run_dir for o in result.skipped] == [cur]
    assert json.loads((old / "record.stale.json").read_text()) == stale  # kept, not deleted
    assert read_record(old)["budget"] == get_budget("smoke").as_dict() and not st.stale() and not st.missing()


def test_mixed_backbones_compares_each_kind(tmp_path):
    """Runs that read different backbone kinds (LLaVA: LM + CL; LLaVA on the MIM encoder: LM + MIM) are not
    mixed; two LM builds within one study are."""
    st = S.features_study(["both"], ["cl", "mim"], [0, 1], "smoke", tmp_path)
    for case, p, rd in st.runs():
        rec = fake_record(case.arch, case.knobs, p["seed"], {"overall": 0.6})
        rec["backbones"] = {k: f"/cache/{k}-1" for k in backbones_needed(case.arch, case.knobs)}
        write_json_atomic(rd / "record.json", rec)
    assert len({json.dumps(r["backbones"]) for *_, r in S.records(st)}) == 3  # three kind sets, one build each
    assert S.mixed_backbones(st) is None
    _, p, rd = st.runs()[-1]
    rec = json.loads((rd / "record.json").read_text())
    rec["backbones"]["lm"] = "/cache/lm-2"  # one run trained on another LM build
    write_json_atomic(rd / "record.json", rec)
    assert "2 LM backbones" in S.mixed_backbones(st)


def test_mixed_backbones_tells_builds_apart_by_content(tmp_path):
    """A rebuild under the same cache path (other weights) is mixed; the same build read from a moved cache is
    not: records compare ``backbone_ids`` (cache.fingerprint) when they carry them."""
    st = S.features_study(["both"], ["cl"], [0, 1], "smoke", tmp_path)
    for i, (case, p, rd) in enumerate(st.runs()):
        rec = fake_record(case.arch, case.knobs, p["seed"], {"overall": 0.6})
        rec["backbones"] = {"lm": f"/checkout{i}/data/cache/lm-1", "cl": f"/checkout{i}/data/cache/cl-1"}
        rec["backbone_ids"] = {"lm": "lm-1@aaaa", "cl": "cl-1@bbbb"}
        write_json_atomic(rd / "record.json", rec)
    assert S.mixed_backbones(st) is None  # one build, read from three checkouts
    _, p, rd = st.runs()[-1]
    rec = json.loads((rd / "record.json").read_text())
    rec["backbones"] = {"lm": "/checkout0/data/cache/lm-1", "cl": "/checkout0/data/cache/cl-1"}
    rec["backbone_ids"]["lm"] = "lm-1@cccc"  # rebuilt in place: same path, other weights
    write_json_atomic(rd / "record.json", rec)
    assert "2 LM backbones" in S.mixed_backbones(st)
    del rec["backbone_ids"]  # a record from before ids: all records are compared by path
    write_json_atomic(rd / "record.json", rec)
    assert "3 LM backbones" in S.mixed_backbones(st)  # the three checkouts' paths differ
    for _, _, rd in st.runs():
        rec = json.loads((rd / "record.json").read_text())
        rec["backbones"] = {"lm": "/checkout0/data/cache/lm-1", "cl": "/checkout0/data/cache/cl-1"}
        write_json_atomic(rd / "record.json", rec)
    assert S.mixed_backbones(st) is None  # by path they agree, whatever the ids say


def test_accuracy_frame_is_tidy_and_complete(tmp_path):
    st = synthetic_study(tmp_path, (0.61, 0.62, 0.63), (0.56, 0.58, 0.60))
    f = S.accuracy_frame(st)
    n_rows = 6 * (2 * len(ROWS) * 3 + len(ROWS))  # runs x ((model, floor, ceiling) x 2 splits + chance) x rows
    assert len(f) == n_rows
    assert {"run", "arch", "seed", "config", "K", "split", "category", "source", "accuracy"} <= set(f.columns)
    over = f[(f["source"] == "model") & (f["split"] == "test") & (f["category"] == "overall")]
    assert sorted(over[over["K"] == 16]["accuracy"].round(6)) == [61.0, 62.0, 63.0]
    st_ = S.stats(f, "config")
    row = st_[(st_["config"] == "K=256") & (st_["category"] == "overall")].iloc[0]
    assert row["mean"] == pytest.approx(58.0) and row["sd"] == pytest.approx(2.0) and row["n"] == 3
    table = S.summary_table(f)
    assert table.loc["K=16", "overall"] == "62.0 ± 1.0" and table.loc["K=256", "overall"] == "58.0 ± 2.0"
    assert table.loc["floor (blind)", "overall"] == "40.0 ± 0.0"
    assert table.loc["ceiling (text oracle)", "overall"] == "85.0 ± 0.0" and table.loc["chance", "overall"] == "30.0"
    cost = S.cost_table(st)
    assert cost.loc["K=16", "train s"] == "11.0 ± 1.0" and cost.loc["K=16", "params total"] == "1,000"
    diag = S.diagnostics_frame(st)
    assert set(diag["diagnostic"]) == {"ovis_effective_entries"}  # lists are not scalar diagnostics
    assert S.diagnostic_summary(diag, "ovis_effective_entries") == \
        "ovis_effective_entries: K=16 4.00 ± 1.00; K=256 4.00 ± 1.00"
    md = S.markdown_table(table)
    assert md.splitlines()[0].startswith("| config | attribute") and "| K=16 |" in md
    w = S.accuracy_frame(st, per="wording")
    assert len(w) == 6 * (2 * 4 * 3 + 4)  # runs x ((model, floor, ceiling) x 2 splits + chance) x 4 wordings
    assert "comparison: is the <shape> bigger than the <shape> ?" in set(w["category"])
    with pytest.raises(ValueError, match=r"per='question'.*allowed values.*wording"):
        S.accuracy_frame(st, per="question")
    ws = S.wording_summary(st)
    assert list(ws.index[:2]) == ["spatial: is the <shape> above the <shape> ?", "spatial: is the <shape> left of the <shape> ?"]
    assert ws.loc["seeds", "K=16"] == 3 and ws.loc["comparison: is the <shape> bigger than the <shape> ?", "chance"] == "50.0"
    case, p, rd = st.runs()[0]  # a record from before vlmlab kept wordings: counted out, and the count says so
    rec = json.loads((rd / "record.json").read_text())
    del rec["wordings"]
    write_json_atomic(rd / "record.json", rec)
    assert S.wording_summary(st).loc["seeds", case.name] == 2 and len(S.accuracy_frame(st)) == n_rows


def test_conclusions_are_paired_over_seeds_and_flip_with_the_numbers(tmp_path):
    f = S.accuracy_frame(synthetic_study(tmp_path / "a", (0.61, 0.62, 0.63), (0.56, 0.58, 0.60)))
    s = S.compare(f, "config", "K=16", "K=256")
    # per-seed differences 5, 4, 3: mean 4, t(0.975, 2) = 4.303 x 1 / sqrt(3) = 2.48
    assert s == ("K=16 scores 62.0 ± 1.0 % overall vs 58.0 ± 2.0 % for K=256: paired difference +4.0 [+1.5, +6.5] "
                 "points over 3 seeds (95 % interval); the interval excludes 0; 3 seeds are fewer than the 5 a "
                 "difference needs before it is taught")
    assert S.compare(f, "config", "K=256", "K=16").startswith("K=256 scores 58.0 ± 2.0 % overall vs 62.0 ± 1.0 %")
    assert "difference -4.0 [-6.5, -1.5]" in S.compare(f, "config", "K=256", "K=16")
    assert "fewer than" not in S.compare(f, "config", "K=16", "K=256", min_seeds=3)
    assert S.ranking(f).startswith("Ranking overall, best first: K=16 62.0 ± 1.0 %; K=256 58.0 ± 2.0 %")
    assert "blind floor 40.0 %, text-oracle ceiling 85.0 %" in S.ranking(f)
    assert S.gap_closed(f).endswith("K=16 49 %; K=256 40 %")  # (62-40)/45, (58-40)/45
    wins = S.category_wins(f, "config", "K=16", "K=256", min_seeds=3)
    assert wins.startswith("Per category (paired over 3 seeds, Holm-corrected across 8 categories), K=16 is "
                           "ahead of K=256 in counting (+40.0 [+40.0, +40.0])")
    # overall is no category: 7 of 8 categories equal on every seed
    assert "K=256 is ahead in no category" in wins and wins.endswith("7 of 8 categories show no difference")

    # the numbers flip: so do the sentences
    g = S.accuracy_frame(synthetic_study(tmp_path / "b", (0.56, 0.58, 0.60), (0.61, 0.62, 0.63),
                                         (0.5, 0.5, 0.5), (0.9, 0.9, 0.9)))
    assert "difference -4.0 [-6.5, -1.5]" in S.compare(g, "config", "K=16", "K=256")
    assert S.ranking(g).startswith("Ranking overall, best first: K=256 62.0 ± 1.0 %; K=16 58.0 ± 2.0 %")
    assert "K=256 is ahead in counting (-40.0" in S.category_wins(g, "config", "K=16", "K=256")

    # the same means, but seeds that disagree: the paired interval includes 0
    h = S.accuracy_frame(synthetic_study(tmp_path / "c", (0.55, 0.62, 0.69), (0.60, 0.58, 0.56)))
    assert "the interval includes 0: no difference shown" in S.compare(h, "config", "K=16", "K=256")
    # spreads as wide as the old rule's, but differences that agree on every seed: shown
    k = S.accuracy_frame(synthetic_study(tmp_path / "d", (0.55, 0.62, 0.69), (0.52, 0.58, 0.64)))
    assert "the interval excludes 0" in S.compare(k, "config", "K=16", "K=256")

    lines = S.conclusions(f, "config", [("K=16", "K=256")])
    assert len(lines) == 5 and all(l.startswith("- ") and l.endswith(".") for l in lines)
    assert any("(compositional split)" in l for l in lines)


def test_a_per_category_difference_must_survive_holms_correction(tmp_path):
    # counting: differences 10, 12, 14 (p = 0.008 alone); 8 categories: Holm multiplies the smallest p by 8
    f = S.accuracy_frame(synthetic_study(tmp_path, (0.6, 0.6, 0.6), (0.6, 0.6, 0.6), (0.60, 0.62, 0.64),
                                         (0.50, 0.50, 0.50)))
    assert "K=16 is ahead of K=256 in no category" in S.category_wins(f, "config", "K=16", "K=256")
    assert "in counting" in S.category_wins(f, "config", "K=16", "K=256", categories=["counting"])


def test_one_seed_has_no_spread(tmp_path):
    st = S.table_size_study([16, 256], [0], "smoke", tmp_path)
    for case, p, rd in st.runs():
        write_json_atomic(rd / "record.json", fake_record("ovis", case.knobs, 0, {"overall": 0.6}))
    f = S.accuracy_frame(st)
    assert "one seed only" in S.compare(f, "config", "K=16", "K=256")
    assert "one seed only" in S.category_wins(f, "config", "K=16", "K=256")


def test_ablation_plot_draws_sd_error_bars_seeds_floor_and_ceiling(tmp_path, live_widgets):
    import matplotlib.pyplot as plt

    st = synthetic_study(tmp_path, (0.61, 0.62, 0.63), (0.56, 0.58, 0.60))
    f = S.accuracy_frame(st)
    fig = S.ablation_plot(f, "K", order=st.levels("K"))
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}
    assert set(axes) == set(ROWS)
    ax = axes["overall"]
    bars = [p for p in ax.patches if p.get_height() > 0]
    assert sorted(round(b.get_height(), 6) for b in bars) == [58.0, 62.0]
    # an error bar per bar: a vertical line at the bar's centre spanning mean ± sd (sd over seeds)
    spans = {}
    for line in ax.lines:  # seaborn draws each error bar with its caps as one line, segments split by NaN
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        if np.nanmax(y) > np.nanmin(y):
            spans[round(float(np.nanmean(x)), 3)] = (np.nanmin(y), np.nanmax(y))
    for b in bars:
        lo, hi = spans[round(b.get_x() + b.get_width() / 2, 3)]
        sd = 1.0 if round(b.get_height()) == 62 else 2.0
        assert lo == pytest.approx(b.get_height() - sd) and hi == pytest.approx(b.get_height() + sd)
    # the individual seeds as points, and the floor / ceiling / chance as horizontal lines
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(points) == 6
    flat = {round(float(line.get_ydata()[0]), 3) for line in ax.lines
            if list(line.get_xdata()) == [0, 1] and len(set(np.asarray(line.get_ydata(), float))) == 1}
    assert {40.0, 85.0, 30.0} <= flat
    assert ax.get_ylabel() == "accuracy (%)" and ax.get_xlabel() == "K"
    plt.close(fig)
    dfig = S.diagnostic_plot(S.diagnostics_frame(st), "K", ["ovis_effective_entries"])
    assert dfig.axes[0].patches
    assert dfig.axes[0].get_title() == "ovis effective entries" and dfig.axes[0].get_ylabel() == "effective entries"
    plt.close(dfig)
    assert S.explorer(f, "K").children  # the widget builds without a front end


def test_paper_quotes_are_literal():
    for key in ("table_size", "indexings", "attention", "features", "comparison"):
        md = S.paper_markdown(key)
        assert md.count("> ") >= len(S.PAPER[key])
    with pytest.raises(ValueError, match="allowed values"):
        S.paper_markdown("nope")
    text = re.sub(r"\*\*", "", (ROOT / "docs" / "papers.md").read_text())  # the page that cites each paper
    for key, quotes in S.PAPER.items():
        for where, quote in quotes:
            assert re.sub(r"\*\*", "", quote) in text, (key, quote)
    for key, claim in S.CLAIMS.items():
        assert claim.source[1] in text, key


def test_arch_table_renders_the_comparison_from_the_shared_store(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("arch_table", ROOT / "tools" / "arch_table.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    st = S.comparison_study(["llava", "ovis"], [0, 1, 2], "smoke", tmp_path)
    for case, p, rd in st.runs():  # records as the comparison notebook would leave them
        acc = {"overall": (0.60 if case.arch == "llava" else 0.50) + 0.01 * p["seed"], "bigger": 0.7 + 0.1 * p["seed"]}
        write_json_atomic(rd / "record.json", fake_record(case.arch, {}, p["seed"], acc))
    args = ["--budget", "smoke", "--seeds", "0", "1", "2", "--archs", "llava", "ovis", "--store", str(tmp_path),
            "--no-train"]
    assert tool.main(args) == 0
    md = capsys.readouterr().out
    assert "| category | llava | ovis | floor (blind) | ceiling (text oracle) | chance |" in md
    assert "| overall | 61.0 ± 1.0 | 51.0 ± 1.0 | 40.0 ± 0.0 | 85.0 ± 0.0 | 30.0 |" in md
    assert "| llava | 1,000 | 500 | 11.0 ± 1.0 | 101.0 ± 1.0 | 3 |" in md
    assert md.count("compositional split") == 1
    assert "| wording | llava | ovis | floor (blind) | ceiling (text oracle) | chance |" in md  # per wording
    assert ("| comparison: is the <shape> bigger than the <shape> ? | 80.0 ± 10.0 | 80.0 ± 10.0 | 40.0 ± 0.0 | "
            "85.0 ± 0.0 | 50.0 |") in md
    assert md.index("spatial: is the <shape> above") < md.index("comparison: is the <shape> bigger")  # CATEGORIES
    out = tmp_path / "table.md"
    assert tool.main(args + ["--output", str(out)]) == 0 and out.read_text() == md
    assert tool.main(args[:-1] + ["--seeds", "0", "1", "2", "3", "--no-train"]) == 1  # seed 3 is not in the store


def test_sweep_specs_of_the_studies_hash_like_the_notebooks():
    """`vlmlab sweep notebooks/sweeps/{comparison,attention}.yaml` fills the same run directories as the
    notebooks' default studies."""
    for name, st in (("comparison", S.comparison_study(S.COMPARISON_ARCHS, [0, 1, 2], "default")),
                     ("attention", S.attention_study(["llavit", "llava", "hovle"], ["causal", "bidirectional"],
                                                     [0, 1, 2], "default"))):
        spec = SweepSpec.from_yaml(ROOT / "notebooks" / "sweeps" / f"{name}.yaml")
        assert {spec.run_dir(p) for p in spec.runs()} == {rd for _, _, rd in st.runs()}, name


def test_inprocess_workers_share_a_studys_runs_and_train_each_once(tmp_path):
    """``executor="inprocess", workers=2``: two warm processes train the study's runs between them (real smoke
    training); every run is done exactly once, by one of them, and a rerun finds them all complete."""
    st = S.comparison_study(["llava", "ovis"], [0, 1], "smoke", tmp_path)
    r = S.run_study(st, executor="inprocess", workers=2, threads=1, progress=False)
    assert not r.failed and not r.busy and not r.skipped, S.describe_result(r, st)
    assert sorted(o.run_dir for o in r.done) == sorted(rd for _, _, rd in st.runs())
    again = S.run_study(st, executor="inprocess", workers=2, threads=1, progress=False)
    assert not again.done and len(again.skipped) == 4


def claim_records(tmp_path, key, design, controls, seeds=range(5)):
    """Records for a claim's study: the design's and each control's accuracy in the claim's category per seed
    (functions of the seed), the other categories at 0.5."""
    st = S.claim_study(key, list(seeds), "smoke", tmp_path)
    claim = S.get_claim(key)
    for case, p, rd in st.runs():
        f = design if case == claim.design else controls[claim.controls.index(case)]
        write_json_atomic(rd / "record.json", fake_record(case.arch, case.knobs, p["seed"],
                                                          {claim.category: f(p["seed"])}))
    return S.accuracy_frame(st)


def test_claim_verdicts_reproduced_not_reproduced_and_inconclusive(tmp_path):
    up = lambda s: 0.60 + 0.01 * (s % 2)  # noqa: E731
    f = claim_records(tmp_path / "a", "vwlmm_lambda", lambda s: up(s) + 0.05, [up])
    t = S.verdicts(f, "vwlmm_lambda")
    assert list(t["verdict"]) == ["reproduced"] and t["difference"].iloc[0] == pytest.approx(5.0)
    assert S.claim_verdict(t) == "reproduced"
    md = S.verdict_markdown(f, "vwlmm_lambda")
    assert "**Verdict: reproduced**" in md and "+5.0" in md and S.CLAIMS["vwlmm_lambda"].source[0] in md
    # a tight interval below +1 point: the gain is ruled out
    f = claim_records(tmp_path / "b", "vwlmm_lambda", lambda s: up(s) + 0.002 * (s % 3), [up])
    assert list(S.verdicts(f, "vwlmm_lambda")["verdict"]) == ["not reproduced"]
    # a gain on fewer than 5 seeds is not taught
    f = claim_records(tmp_path / "c", "vwlmm_lambda", lambda s: up(s) + 0.05, [up], seeds=range(3))
    assert list(S.verdicts(f, "vwlmm_lambda")["verdict"]) == ["inconclusive"]
    assert list(S.verdicts(f, "vwlmm_lambda", min_seeds=3)["verdict"]) == ["reproduced"]
    # seeds that disagree: neither shown nor ruled out
    f = claim_records(tmp_path / "d", "vwlmm_lambda", lambda s: up(s) + (0.06 if s % 2 else -0.04), [up])
    assert list(S.verdicts(f, "vwlmm_lambda")["verdict"]) == ["inconclusive"]


def test_a_claim_with_several_contrasts_holm_corrects_them_and_needs_each(tmp_path):
    base = lambda s: 0.60 + 0.01 * (s % 2)  # noqa: E731
    lower = lambda s: base(s) - 0.05  # noqa: E731
    f = claim_records(tmp_path, "llavit_components", base, [lower, lower, base])
    t = S.verdicts(f, "llavit_components")
    assert len(t) == 3 and (t["p_holm"] >= t["p"]).all() and t["category"].eq("overall").all()
    assert list(t["verdict"]) == ["reproduced", "reproduced", "not reproduced"]
    assert S.claim_verdict(t) == "not reproduced"
    assert "Holm-corrected across the contrasts" in S.verdict_markdown(f, "llavit_components")
    x = S.claim_study("xformer_mim", [0], "smoke", tmp_path)
    assert S.get_claim("xformer_mim").category == "structural" and len(x.cases) == 2
    with pytest.raises(ValueError, match=r"claim='nope' is unknown; allowed values"):
        S.claim_study("nope", [0], "smoke")
