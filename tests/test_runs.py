"""Runs: parameter validation before training, determinism, the record, the run notebook under papermill."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from vlmlab.results import tidy, wording_table
from vlmlab.runs import RunConfig, run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("params, exc, pattern", [
    ({"arch": "gpt5"}, ValueError, r"arch='gpt5'.*allowed values.*llava"),
    ({"budget": "huge"}, ValueError, r"budget='huge'.*allowed values.*default.*smoke"),
    ({"knobs": {"table_size": 8}}, ValueError, r"knobs=\['table_size'\] do not apply to arch='llava'"),
    ({"seed": "0"}, TypeError, r"parameter 'seed' must be an int"),
    ({"knobs": {"connector_depth": 2.5}}, TypeError, r"connector_depth.*must be an int"),
    ({"precision": "fp8"}, ValueError, r"precision='fp8'.*allowed values"),
])
def test_bad_parameters_fail_with_named_parameter(params, exc, pattern):
    with pytest.raises(exc, match=pattern):
        RunConfig.from_params(**{"budget": "smoke", **params})


@pytest.fixture(scope="module")
def smoke_runs():
    cfg = RunConfig.from_params(arch="llava", budget="smoke", seed=3)
    return run(cfg, progress=False), run(cfg, progress=False)


def test_same_seed_same_metrics(smoke_runs):
    a, b = (e.record for e in smoke_runs)
    assert a["metrics"] == b["metrics"] and a["floor"] == b["floor"] and a["ceiling"] == b["ceiling"]
    assert a["losses"] == b["losses"]


def test_record_contents(smoke_runs, tmp_path):
    rec = smoke_runs[0].record
    for split in ("test", "compositional"):
        assert set(rec["metrics"][split]) >= {"attribute", "counting", "semantic", "structural", "overall"}
        assert all(0 <= v <= 1 for v in rec["metrics"][split].values())
    assert rec["floor"]["test"] and rec["ceiling"]["test"]
    assert list(rec["losses"]) == ["align", "instruct"] and all(math.isfinite(x) for x in rec["losses"]["align"])
    assert rec["params"]["trainable"] < rec["params"]["total"]
    assert rec["samples_per_s"] > 0 and rec["wall_seconds"] >= rec["train_seconds"] > 0
    assert rec["config"]["knobs"] == {"encoder": "cl", "feature_layer": -2, "connector_depth": 2, "attention": "causal",
                                     "cell_words": False}
    # the share of argmax answers inside each question's answer set, for the model and both references
    for source in ("model", "floor", "ceiling"):
        rates = rec["valid_answer_rate"][source]["test"]
        assert set(rates) >= {"spatial", "overall"} and all(0.0 <= v <= 1.0 for v in rates.values())
    json.dumps(rec)  # JSON-able
    assert set(rec["wordings"]) == {"model", "floor", "ceiling"}
    for source, by_split in rec["wordings"].items():
        for split in ("test", "compositional"):
            cats = by_split[split]
            assert set(cats) == {"spatial", "counting", "comparison", "logical"} and all(len(w) == 2 for w in cats.values())
            for cat, ws in cats.items():  # a category's accuracy is a mean of its wordings'
                acc = (rec["metrics"] if source == "model" else rec[source])[split][cat]
                assert min(ws.values()) - 1e-9 <= acc <= max(ws.values()) + 1e-9, (source, split, cat)
    assert all(v == (0.25 if c == "counting" else 0.5) for c, ws in rec["wordings"]["model"]["chance"].items()
               for v in ws.values())
    table = wording_table(rec)
    assert table.shape == (8, 4) and list(table.index.get_level_values("category").unique()) == [
        "spatial", "counting", "comparison", "logical"]
    assert table.loc[("comparison", "is the <shape> bigger than the <shape> ?"), "model"] == round(
        100 * rec["wordings"]["model"]["test"]["comparison"]["is the <shape> bigger than the <shape> ?"], 1)
    rows = tidy(rec)
    assert len(rows[rows["metric"].str.startswith("wording.")]) == 8 * (3 * 2 + 1)  # 3 sources x 2 splits + chance
    assert len(rec["diagnostics"]["answer_to_image_attention_map"]) == 16


def test_reuse_loads_the_cached_trained_model_and_only_for_the_same_config(smoke_runs, monkeypatch):
    import torch

    import vlmlab.runs as runs

    trained = smoke_runs[0]
    cfg = trained.config
    calls = []
    real_train = runs.train_stages
    monkeypatch.setattr(runs, "train_stages", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    again = run(cfg, progress=False, reuse=True)
    assert not calls, "reuse=True trained although the identical config had been trained before"
    assert "reused" in again.record and again.record["metrics"] == trained.record["metrics"]
    sd_a, sd_b = trained.model.state_dict(), again.model.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    # the reused model really is the trained one: it answers the same on fresh test questions
    batch = trained.world.batch(trained.model.eval_task, "test", 500, 16)
    with torch.no_grad():
        assert torch.equal(trained.model.answer_logits(batch), again.model.answer_logits(batch))
    other = RunConfig.from_params(arch="llava", budget="smoke", seed=3, knobs={"connector_depth": 1})
    run(other, progress=False, reuse=True, backbones=again.backbones)
    assert calls, "a different knob must not reuse the cached model"


def test_reuse_of_a_model_trained_without_references_adds_them(smoke_runs, monkeypatch):
    """A model cached by a ``references=False`` run, reused by a run that asks for references, comes back with the
    floor and the ceiling (a notebook reads them), without retraining the model."""
    import vlmlab.runs as runs

    cfg = RunConfig.from_params(arch="llava", budget="smoke", seed=11, references=False)
    bare = run(cfg, progress=False, backbones=smoke_runs[0].backbones)
    assert bare.record["floor"] is None
    calls = []  # the model's training (the blind floor trains on its own, through train_stages)
    monkeypatch.setattr(runs, "_train", lambda *a, **k: calls.append(1))
    again = run(RunConfig.from_params(arch="llava", budget="smoke", seed=11), progress=False, reuse=True,
                backbones=smoke_runs[0].backbones)
    assert not calls and "reused" in again.record
    assert again.record["floor"] is not None and again.record["ceiling"] is not None
    assert "floor" in again.record["wordings"] and "floor" in again.record["valid_answer_rate"]
    assert again.record["metrics"] == bare.record["metrics"]


def test_a_moved_cache_keeps_the_trained_model_and_the_references(smoke_runs, tmp_path, monkeypatch):
    """Copying the cache elsewhere (a moved checkout, another clone's data/cache) must not retrain anything: the
    model and the floor/ceiling are keyed by what the backbones hold, not by where they live."""
    import os
    import shutil

    import vlmlab.runs as runs

    moved = tmp_path / "moved-cache"
    # finished entries only: a parallel test worker may be writing a hidden temporary entry into the shared cache
    shutil.copytree(os.environ["VLMLAB_CACHE"], moved, ignore=shutil.ignore_patterns(".*"))
    monkeypatch.setenv("VLMLAB_CACHE", str(moved))
    calls = []
    monkeypatch.setattr(runs, "train_stages", lambda *a, **k: calls.append(1))
    again = run(smoke_runs[0].config, progress=False, reuse=True)
    assert not calls and again.record["reused"].startswith(str(moved))
    cfg = smoke_runs[0].config
    refs = runs._references(again.backbones, again.world, runs.get_budget(cfg.budget), runs.pick_device(cfg.device),
                            cfg.precision, False)
    assert not calls, "the blind floor was retrained for a moved cache"
    assert refs["floor"] == smoke_runs[0].record["floor"] and refs["ceiling"] == smoke_runs[0].record["ceiling"]


def test_cached_results_depend_only_on_the_backbones_a_model_reads():
    """A LLaVA model trained with all three backbones loaded and one trained with only the LM and CL encoder
    loaded share their cache key; another CL encoder changes it; the references depend on the LM alone."""
    from types import SimpleNamespace

    import torch

    import vlmlab.runs as runs
    from vlmlab.budgets import get_budget

    b = get_budget("smoke")
    cfg = RunConfig.from_params(arch="llava", budget="smoke")
    all3 = SimpleNamespace(paths={"lm": "L", "cl": "C", "mim": "M"})
    two = SimpleNamespace(paths={"lm": "L", "cl": "C"})
    cpu = torch.device("cpu")
    assert runs._model_key(cfg, b, all3, cpu) == runs._model_key(cfg, b, two, cpu)
    other_cl = SimpleNamespace(paths={"lm": "L", "cl": "X"})
    assert runs._model_key(cfg, b, two, cpu) != runs._model_key(cfg, b, other_cl, cpu)
    mim_cfg = RunConfig.from_params(arch="llava", knobs={"encoder": "mim"}, budget="smoke")
    assert runs._model_key(mim_cfg, b, all3, cpu)["backbones"] == {"lm": "L", "mim": "M"}
    assert runs._used_paths(all3, ("lm",)) == {"lm": "L"}
