"""Sweeps: spec expansion and validation; resume after a killed sweep (no lost, duplicated or corrupt record);
a failing run is recorded while the others finish; the local pool and a Dask cluster give the same records.

Runs execute the real run notebook at the smoke budget (papermill + a kernel: ~10-20 s each on a busy 2-core CPU),
so the grids are the smallest that show each property.
"""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmlab import cli
from vlmlab.sweep import SweepSpec, SweepSpecError, params_hash, read_record, run_sweep, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
RUN_NB = ROOT / "notebooks" / "run.ipynb"


def make_spec(out, grid, seeds=(0,), name="s", **fixed) -> SweepSpec:
    return SweepSpec.from_dict({"name": name, "notebook": str(RUN_NB),
                                "fixed": {"arch": "llava", "budget": "smoke", **fixed}, "grid": grid,
                                "seeds": list(seeds)}, out=out)


# ---------------------------------------------------------------------------------------------------- specs

def test_expansion_order_merging_and_run_dirs(tmp_path):
    spec = make_spec(tmp_path, {"knobs.attention": ["causal", "bidirectional"], "precision": ["fp32", "bf16"]},
                     seeds=[3, 1], knobs={"connector_depth": 1})
    runs = spec.runs()
    assert len(runs) == 8
    # seeds outermost, then the grid's product in the spec's order (last key fastest)
    assert [(r["seed"], r["knobs"]["attention"], r["precision"]) for r in runs[:4]] == [
        (3, "causal", "fp32"), (3, "causal", "bf16"), (3, "bidirectional", "fp32"), (3, "bidirectional", "bf16")]
    assert [r["seed"] for r in runs[4:]] == [1] * 4
    # knobs.<name> entries merge into the fixed knobs dict; the fixed dict itself is not mutated
    assert all(r["knobs"]["connector_depth"] == 1 and r["arch"] == "llava" and r["budget"] == "smoke" for r in runs)
    assert spec.fixed["knobs"] == {"connector_depth": 1}
    assert runs == spec.runs()  # deterministic
    dirs = [spec.run_dir(r) for r in runs]
    assert len(set(dirs)) == 8 and all(d.parent == tmp_path / "s" and d.name == params_hash(r)
                                       for d, r in zip(dirs, runs))


def test_yaml_spec_paths_and_defaults(tmp_path):
    (tmp_path / "sub").mkdir()
    y = tmp_path / "sub" / "abl.yaml"
    y.write_text("notebook: notebooks/run.ipynb\nfixed: {budget: smoke}\ngrid:\n  arch: [llava]\n")
    spec = SweepSpec.from_yaml(y)
    assert spec.name == "abl" and spec.notebook == RUN_NB and spec.seeds is None
    assert spec.out == ROOT / "papermill_runs"  # relative paths are taken from the repository root
    assert spec.runs() == [{"budget": "smoke", "arch": "llava"}]
    # a notebook next to the spec file wins; --out overrides the spec's out
    (tmp_path / "sub" / "run.ipynb").write_text(RUN_NB.read_text())
    y.write_text("name: x\nnotebook: run.ipynb\nout: elsewhere\nseeds: [0]\n")
    spec = SweepSpec.from_yaml(y, out=tmp_path / "o")
    assert spec.notebook == tmp_path / "sub" / "run.ipynb" and spec.sweep_dir == tmp_path / "o" / "x"
    # the shipped example specs are valid
    for p in sorted((ROOT / "notebooks" / "sweeps").glob("*.yaml")):
        assert SweepSpec.from_yaml(p).runs()
    smoke = SweepSpec.from_yaml(ROOT / "notebooks" / "sweeps" / "smoke.yaml")
    assert len(smoke.runs()) == 4 and {r["budget"] for r in smoke.runs()} == {"smoke"}


BASE = {"name": "v", "notebook": str(RUN_NB), "fixed": {"arch": "llava", "budget": "smoke"}}


@pytest.mark.parametrize("change, match", [
    ({"grdi": {}}, r"unknown field 'grdi'.*allowed fields: \['name', 'notebook'"),
    ({"notebook": "nope.ipynb"}, r"notebook: 'nope.ipynb' not found"),
    ({"grid": {"arhc": ["llava"]}}, r"grid.arhc: 'arhc' is not a parameter of run.ipynb; allowed parameters: "
                                    r"\['arch', 'knobs', 'seed', 'budget', 'precision', 'data', 'eval_data', "
                                    r"'image_root', 'max_new_tokens', 'checkpoint_every', 'resume'\]"),
    ({"fixed": {"output_dir": "/tmp"}}, r"fixed.output_dir: set by the sweep"),
    ({"grid": {"seed": 3}}, r"grid.seed: expected a non-empty list"),
    ({"grid": {"knobs.attention": []}}, r"grid.knobs.attention: expected a non-empty list"),
    ({"grid": {"knobs.attention": ["causal", "causal"]}}, r"grid.knobs.attention: value 'causal' is listed twice"),
    ({"grid": {"budget.x": [1]}}, r"grid.budget.x: '<parameter>.<key>' entries are for dict parameters: \['knobs'\]"),
    ({"grid": {"budget": [1, "smoke"]}}, r"grid.budget: expected a str \(the notebook's default is 'default'\)"),
    ({"grid": {"arch": ["llava", "ovis"]}}, r"grid.arch: also set in fixed"),
    ({"seeds": [0, "1"]}, r"seeds: expected a non-empty list of integers"),
    ({"seeds": [1, 1]}, r"seeds: \[1, 1\] lists a seed twice"),
    ({"seeds": [0], "grid": {"seed": [1, 2]}}, r"seeds: 'seed' is also set in fixed or grid"),
    ({"name": "../up"}, r"name: '../up' is not a valid directory name"),
    ({"grid": {"knobs": [{"attention": "causal"}, {}], "knobs.attention": ["causal"]}},
     r"grid: two grid points give the same parameters"),
])
def test_validation_errors_name_the_field(tmp_path, change, match):
    with pytest.raises(SweepSpecError, match=match):
        SweepSpec.from_dict({**BASE, **change}, out=tmp_path)


def test_invalid_spec_through_the_cli(tmp_path, capsys):
    y = tmp_path / "bad.yaml"
    y.write_text("notebook: notebooks/run.ipynb\ngrid: {knobs.attention: causal}\n")
    assert cli.main(["sweep", str(y), "--out", str(tmp_path)]) == 2
    assert "grid.knobs.attention: expected a non-empty list" in capsys.readouterr().err


def test_atomic_json_and_driver_stays_light(tmp_path):
    for p in ({"arch": "llava", "knobs": {"b": 1, "a": [1, 2]}, "seed": 0}, {}, {"x": 1.5, "y": None}):
        write_json_atomic(tmp_path / "a.json", p)
        assert json.loads((tmp_path / "a.json").read_text()) == p
        assert params_hash(p) == params_hash(json.loads(json.dumps(p)))
    assert params_hash({"seed": 0}) != params_hash({"seed": 1})
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]  # no temp files left behind
    # the driver (spec loading, expansion, resume checks) never imports torch
    code = ("import sys; from vlmlab.sweep import SweepSpec; "
            f"SweepSpec.from_yaml({str(ROOT / 'notebooks/sweeps/smoke.yaml')!r}).runs(); "
            "assert 'torch' not in sys.modules and 'papermill' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------------ execution

def _check_complete(spec: SweepSpec) -> dict:
    """Every run has exactly one valid record matching its params; no errors or temp files remain."""
    runs = spec.runs()
    records = sorted(spec.sweep_dir.rglob("record.json"))
    assert len(records) == len(runs)
    out = {}
    for p in runs:
        rd = spec.run_dir(p)
        rec = read_record(rd)
        assert rec is not None, f"{rd} has no valid record"
        assert json.loads((rd / "params.json").read_text()) == p
        assert rec["config"]["seed"] == p["seed"] and rec["config"]["arch"] == p["arch"]
        assert all(rec["config"]["knobs"][k] == v for k, v in p.get("knobs", {}).items())
        assert not (rd / "error.json").exists()
        assert (rd / "run.ipynb").is_file()
        assert not list(rd.glob(".*.json.*")), "temp file of an interrupted write left behind"
        out[rd.name] = rec
    return out


def _free(run_dir: Path) -> bool:
    with open(run_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


@pytest.mark.slow
def test_killed_sweep_resumes_every_run_once(tmp_path):
    spec = make_spec(tmp_path, {"knobs.attention": ["causal", "bidirectional"]}, name="kill")
    y = tmp_path / "kill.yaml"
    y.write_text(json.dumps({"name": "kill", "notebook": str(RUN_NB), "fixed": spec.fixed, "grid": spec.grid,
                             "seeds": spec.seeds}))  # JSON is YAML
    first, second = (spec.run_dir(p) for p in spec.runs())
    proc = subprocess.Popen([sys.executable, "-m", "vlmlab.cli", "sweep", str(y), "--out", str(tmp_path),
                             "--workers", "1", "--threads", "1"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        # kill the whole sweep (driver and papermill processes) while the second run executes
        while not ((first / "record.json").exists() and (second / "run.ipynb").exists()):
            assert proc.poll() is None, "the sweep ended before it could be interrupted"
            assert time.monotonic() < deadline, "no record appeared"
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert read_record(first) is not None and not (second / "record.json").exists()
    # the orphaned kernel notices its parent died and exits: nothing holds the run directory any longer
    deadline = time.monotonic() + 30
    while not _free(second):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    first_bytes = (first / "record.json").read_bytes()
    # as if this run had failed in an earlier sweep: the retry removes the stale error
    write_json_atomic(second / "error.json", {"error": "stale", "cell": None})

    res = run_sweep(spec, workers=1, threads=1, progress=False)
    assert [o.run_dir for o in res.skipped] == [first] and [o.run_dir for o in res.done] == [second]
    assert not res.failed and res.ok
    _check_complete(spec)
    assert (first / "record.json").read_bytes() == first_bytes  # a finished record is never rewritten

    # a second resume executes nothing: no notebook or record is written again
    written = {f: f.stat().st_mtime_ns for d in (first, second) for f in (d / "run.ipynb", d / "record.json")}
    again = run_sweep(spec, workers=1, progress=False)
    assert len(again.skipped) == 2 and not again.done
    assert {f: f.stat().st_mtime_ns for f in written} == written
    assert [r["config"]["knobs"]["attention"] for r in again.records()] == ["causal", "bidirectional"]


FAIL_GRID = {"knobs.attention": ["causal", "sideways"]}  # 'sideways' is not an attention type


@pytest.fixture(scope="module")
def pool_sweep(tmp_path_factory):
    spec = make_spec(tmp_path_factory.mktemp("pool"), FAIL_GRID, name="fail")
    return run_sweep(spec, workers=2, threads=1, progress=False)


@pytest.mark.slow
def test_failed_run_is_recorded_and_the_others_finish(pool_sweep):
    res = pool_sweep
    assert len(res.done) == 1 and len(res.failed) == 1 and not res.ok
    bad = res.failed[0]
    assert bad.params["knobs"] == {"attention": "sideways"}
    err = json.loads((bad.run_dir / "error.json").read_text())
    assert "attention" in err["error"] and "allowed values" in err["error"] and "causal" in err["error"]
    assert bad.error == err["error"]
    assert not (bad.run_dir / "record.json").exists()
    nb = json.loads((bad.run_dir / "run.ipynb").read_text())  # executed up to the failing cell
    assert any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", []))
    good = res.done[0]
    assert read_record(good.run_dir)["config"]["knobs"]["attention"] == "causal"
    assert "FAILED" in res.summary() and bad.run_dir.name in res.summary()


@pytest.mark.slow
def test_results_cli_writes_one_tidy_csv(pool_sweep, tmp_path, capsys):
    import pandas as pd

    out = tmp_path / "tidy.csv"
    assert cli.main(["results", str(pool_sweep.spec.sweep_dir), "-o", str(out)]) == 0
    assert "1 failed run(s)" in capsys.readouterr().out
    df = pd.read_csv(out)
    assert df["run"].nunique() == 1 and set(df["knob.attention"]) == {"causal"}
    assert not df.duplicated(["run", "source", "split", "metric"]).any()
    assert "accuracy.overall" in set(df["metric"])


@pytest.mark.slow
def test_dask_cluster_gives_the_same_records_as_the_local_pool(pool_sweep, tmp_path):
    distributed = pytest.importorskip("distributed")

    spec = make_spec(tmp_path, FAIL_GRID, name="fail")
    with distributed.LocalCluster(n_workers=1, processes=True, threads_per_worker=1, dashboard_address=None) as lc:
        res = run_sweep(spec, dask_address=lc.scheduler_address, threads=1, progress=False)
    assert [o.run_dir.name for o in res.done] == [o.run_dir.name for o in pool_sweep.done]
    assert [o.run_dir.name for o in res.failed] == [o.run_dir.name for o in pool_sweep.failed]
    assert res.failed[0].error == pool_sweep.failed[0].error
    a, b = res.done[0].record, pool_sweep.done[0].record
    assert a["budget"] == b["budget"] and a["backbones"] == b["backbones"], "code or cache changed in between"
    assert a["metrics"] == b["metrics"] and a["losses"] == b["losses"] and a["config"] == b["config"]
