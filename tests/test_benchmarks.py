"""The benchmark script runs end to end and reports consistent numbers (at the smoke budget; the measured
default-budget numbers live in benchmarks/results-default.json)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bench(script: str, *argv: str, timeout: int, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python benchmarks/<script> ARGV`` as a user runs it, its output captured; ``env``: variables to set."""
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *argv], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_benchmarks_report_world_llava_and_lm_pretraining_rates(tmp_path, smoke_budget):
    out = tmp_path / "bench.json"
    proc = bench("run_all.py", "--budget", "smoke", "--steps", "4", "--output", str(out), timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["world_samples_per_s"] > 0
    for prec in ("fp32", "bf16"):
        r = res["llava_train"][prec]
        assert r["samples_per_s"] == smoke_budget.vlm_batch / r["step_s"] > 0
        assert math.isclose(r["achieved_gflops"], r["gflop_per_step"] / r["step_s"])
    lm = res["lm_pretrain"]
    assert lm["gflop_per_step"] > 0 and 0 < lm["real_token_share"] <= 1
    per_step = lm["data_s_per_batch"] + lm["step_s"]
    assert math.isclose(lm["projected_pretrain_min"], smoke_budget.lm_steps * per_step / 60)
    assert lm["precision"] == smoke_budget.lm_precision and lm["packed_row"] == smoke_budget.lm_pack
    assert f"LM pretraining (smoke, {smoke_budget.lm_precision}, eager, rows packed" in proc.stdout


def test_compile_ab_reports_per_stage_ratios_and_loss_agreement(tmp_path):
    """The eager-vs-compiled benchmark end to end at the smoke budget; VLMLAB_COMPILE=0 keeps both sides eager
    here (compiling takes a minute), so the sides must agree exactly and say they were not compiled."""
    out = tmp_path / "ab.json"
    proc = bench("compile_ab.py", "--budget", "smoke", "--archs", "llava", "--steps", "2", "--rounds", "2",
                 "--output", str(out), timeout=600, env={"VLMLAB_COMPILE": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    llava = json.loads(out.read_text())["designs"]["llava"]
    assert set(llava["stages"]) == {"align", "instruct"}
    for r in llava["stages"].values():
        assert r["compiled"] is False and r["max_loss_diff"] == 0.0
        assert math.isclose(r["ratio"], r["eager_step_s"] / r["compiled_step_s"])
    assert "llava: run ratio eager/compiled" in proc.stdout
    bad = bench("compile_ab.py", "--archs", "llama", timeout=120)
    assert bad.returncode == 2 and "--archs: unknown ['llama']" in bad.stderr


def test_run_overhead_splits_a_run_into_training_evaluation_and_overhead(tmp_path):
    out = tmp_path / "overhead.json"
    proc = bench("run_overhead.py", "--budget", "smoke", "--output", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (r,) = json.loads(out.read_text())["rounds"]
    for side in ("papermill", "in_process"):
        s = r[side]
        assert {"setup_s", "train_s", "evaluate_s", "references_s"} <= set(s)
        assert math.isclose(s["overhead_s"], s["wall_s"] - s["train_s"] - s["evaluate_s"])
        assert 0 < s["overhead_share"] < 1 and s["train_s"] > 0
    assert r["papermill"]["overhead_s"] > r["in_process"]["overhead_s"]  # a kernel start and imports per run


def test_step_profile_splits_each_stage_into_matmuls_and_the_rest(tmp_path):
    """Eager steps only here (VLMLAB_COMPILE=0 leaves CompiledLoss eager), so both sides profile the same code."""
    out = tmp_path / "profile.json"
    proc = bench("step_profile.py", "--budget", "smoke", "--steps", "1", "--output", str(out), timeout=600,
                 env={"VLMLAB_COMPILE": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    d = json.loads(out.read_text())
    assert set(d["stages"]) == {"align", "instruct"}
    for r in d["stages"].values():
        for side in ("eager", "compiled"):
            s = r[side]
            assert 0 < s["matmul_share"] < 1 and 0 < s["matmul_ms"] < s["step_ms"]
            assert math.isclose(s["matmul_share"], s["matmul_ms"] / s["step_ms"])
    bad = bench("step_profile.py", "--arch", "llama", timeout=120)
    assert bad.returncode == 2 and "--arch: unknown 'llama'" in bad.stderr


def test_study_wall_times_one_study_before_and_after_from_empty_stores(tmp_path):
    out = tmp_path / "wall.json"
    proc = bench("study_wall.py", "--archs", "llava", "--seeds", "1", "--output", str(out), timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (r,) = json.loads(out.read_text())["rounds"]
    assert r["before"]["executor"] == "papermill" and r["after"]["executor"] == "inprocess"
    assert r["before"]["runs"] == r["after"]["runs"] == 1  # each side trained its run: nothing was reused
    assert math.isclose(r["before_over_after"], r["before"]["wall_s"] / r["after"]["wall_s"])
    for argv, says in ((["--seeds", "0"], "--seeds and --rounds must be at least 1"),
                       (["--sides", "after,after"], "--sides: got 'after,after'")):
        bad = bench("study_wall.py", *argv, timeout=120)
        assert bad.returncode == 2 and says in bad.stderr, bad.stderr[-500:]
