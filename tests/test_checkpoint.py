"""Checkpoints and resume: a run stopped at any step and resumed from its latest checkpoint ends as one never
stopped, in-process at several stop points and for a real SIGKILL of a smoke run's process."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import vlmlab.train as train
from vlmlab.archs import build
from vlmlab.checkpoint import Checkpointing
from vlmlab.device import seed_everything
from vlmlab.runs import RunConfig, make_data, run


class Stop(Exception):
    """Stands in for a kill: raised inside a step, so nothing after it runs."""


def _train(arch, backbones, budget, world, checkpoint=None, stop_at=None, monkeypatch=None):
    """Train ``arch`` from seed 0; with ``stop_at``, stop inside the update of that global step (1-based)."""
    if stop_at is not None:
        real, calls = train.update, []

        def update(*a, **k):
            calls.append(1)
            if len(calls) == stop_at:
                raise Stop
            return real(*a, **k)
        monkeypatch.setattr(train, "update", update)
    seed_everything(0)
    m = build(arch, backbones, budget)
    try:
        logs = train.train_stages(m, m.stages(), make_data(world, 4), budget, device=torch.device("cpu"),
                                  progress=False, checkpoint=checkpoint)
    except Stop:
        return None
    finally:
        if stop_at is not None:
            monkeypatch.setattr(train, "update", real)
    return [l.losses for l in logs], {k: v.clone() for k, v in m.state_dict().items()}, torch.rand(3)


_UNSTOPPED: dict = {}  # arch -> the training never stopped, shared by the cases


@pytest.mark.parametrize("arch, every, stop_at", [
    ("llava", 3, 5),  # saved in the first stage, stopped in the second
    ("llava", 4, 6),  # saved as the first stage ends
    ("llava", 3, 11),  # saved and stopped in the middle of the second stage
    ("xformer", 3, 8),  # its loss draws MAE masks from the global RNG
])
def test_stopped_then_resumed_training_is_identical(arch, every, stop_at, tiny_backbones, smoke_budget, world,
                                                    tmp_path, monkeypatch):
    if arch not in _UNSTOPPED:
        _UNSTOPPED[arch] = _train(arch, tiny_backbones, smoke_budget, world)
    ref_losses, ref_state, ref_rng = _UNSTOPPED[arch]
    ck = Checkpointing(tmp_path, every)
    assert _train(arch, tiny_backbones, smoke_budget, world, ck, stop_at, monkeypatch) is None
    saved = ck.latest()
    assert saved is not None and int(saved.name.split("-")[1]) == (stop_at - 1) // every * every
    assert len(list(tmp_path.iterdir())) == 1  # only the latest is kept
    resumed = Checkpointing(tmp_path, every, resume=True)
    losses, state, rng = _train(arch, tiny_backbones, smoke_budget, world, resumed)
    assert resumed.resumed_from["global_step"] == (stop_at - 1) // every * every
    assert losses == ref_losses
    assert [k for k in ref_state if not torch.equal(ref_state[k], state[k])] == []
    assert torch.equal(rng, ref_rng)  # the RNG continues where the uninterrupted run's does
    assert ck.latest().name == f"step-{sum(len(x) for x in losses):08d}"  # and the end of training is saved


def test_a_checkpoint_of_another_run_is_refused(tiny_backbones, smoke_budget, world, tmp_path, monkeypatch):
    _train("llava", tiny_backbones, smoke_budget, world, Checkpointing(tmp_path, 1, fingerprint={"seed": 0}), 3,
           monkeypatch)
    with pytest.raises(ValueError, match=r"belongs to another run \(differs in seed\)"):
        _train("llava", tiny_backbones, smoke_budget, world, Checkpointing(tmp_path, 6, True, {"seed": 1}))


@pytest.mark.parametrize("params, exc, pattern", [
    ({"checkpoint_every": -1}, ValueError, r"'checkpoint_every' must be an int >= 0"),
    ({"checkpoint_every": "4"}, TypeError, r"'checkpoint_every' must be an int"),
    ({"resume": "yes"}, TypeError, r"'resume' must be a bool"),
])
def test_bad_checkpoint_parameters(params, exc, pattern):
    with pytest.raises(exc, match=pattern):
        RunConfig.from_params(budget="smoke", **params)


def test_checkpoints_need_an_output_dir_and_leave_the_config_alone():
    cfg = RunConfig.from_params(budget="smoke", checkpoint_every=4, resume=True)
    assert "checkpoint_every" not in cfg.resolved() and "resume" not in cfg.resolved()
    with pytest.raises(ValueError, match=r"need an output_dir"):
        run(cfg)


# ---- a real kill

KILLED = """
import sys, time
from pathlib import Path
import vlmlab.train as train
real, calls = train.update, []
def update(*a, **k):
    calls.append(1)
    if len(calls) == {stop_at}:  # hold inside this step until the test kills the process
        Path({marker!r}).write_text("stopped")
        time.sleep(600)
    return real(*a, **k)
train.update = update
from vlmlab import cli
sys.exit(cli.main({argv!r}))
"""


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vlmlab.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_a_killed_smoke_run_resumes_with_identical_metrics(tmp_path):
    """A smoke LLaVA run saving every 4 steps is SIGKILLed inside step 11 (the second stage's 7th of 8), resumed
    with --resume from its step-8 checkpoint, and ends with the record of a run never stopped."""
    import json

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # the same threads for every process
    base = ["run", "--budget", "smoke", "--seed", "1", "--in-process"]
    ref = _cli([*base, "--out", str(tmp_path / "ref")], env)
    assert ref.returncode == 0, ref.stderr[-2000:]

    out, marker = tmp_path / "killed", tmp_path / "stopped"
    argv = [*base, "--out", str(out), "--checkpoint-every", "4"]
    proc = subprocess.Popen([sys.executable, "-c", KILLED.format(stop_at=11, marker=str(marker), argv=argv)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        assert time.monotonic() - t0 < 300, "the run never reached step 11"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (out / "record.json").exists()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000008"]

    resumed = _cli([*argv, "--resume"], env)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (json.loads((d / "record.json").read_text()) for d in (tmp_path / "ref", out))
    assert b["checkpoints"]["resumed_from"]["global_step"] == 8 and b["checkpoints"]["resumed_from"]["stage"] == \
        "instruct"
    assert a["losses"] == b["losses"]
    for k in ("metrics", "wordings", "valid_answer_rate", "diagnostics", "floor", "ceiling"):
        assert a[k] == b[k], k
