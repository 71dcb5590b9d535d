"""Shared fixtures: a tiny world and tiny backbones with random weights (no pretraining), and a session-wide
smoke-budget cache for the end-to-end tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

IN_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))  # a pytest-xdist worker process (pyproject's `-n`)
if IN_WORKER:
    # one thread per parallel worker, for the notebooks' kernels too: spinning OpenMP threads of two workers on
    # two cores slow each other down several times over
    from vlmlab.sweep import THREAD_VARS  # the variables a sweep sets for its runs' thread count

    os.environ.update({var: "1" for var in THREAD_VARS})
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, torch.get_num_threads()))
# unattended: interactive views return a note instead of a widget (vlmlab.widgets.batch_mode); the notebooks the
# tests execute inherit it. Tests of the widgets themselves unset it.
os.environ["VLMLAB_BATCH"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _smoke_cache(tmp_path_factory):
    """Tests never touch the user's cache: backbones for the smoke budget are built once per test run here (the
    parallel workers share it)."""
    if "VLMLAB_TEST_CACHE" in os.environ:  # reuse across test sessions when set (local iteration)
        root = Path(os.environ["VLMLAB_TEST_CACHE"])
    elif IN_WORKER:  # parallel workers share one cache; its per-entry locks
        root = tmp_path_factory.getbasetemp().parent / "vlmlab-cache"  # let one worker build each entry
        root.mkdir(exist_ok=True)
    else:
        root = tmp_path_factory.mktemp("vlmlab-cache")
    old = os.environ.get("VLMLAB_CACHE")
    os.environ["VLMLAB_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("VLMLAB_CACHE", None)
    else:
        os.environ["VLMLAB_CACHE"] = old


@pytest.fixture(scope="session")
def papermill_help():
    """``papermill --help-notebook NB`` run in this process (a subprocess spent 3 s importing papermill for each
    notebook), once per notebook: click's result, with ``.stdout`` and ``.stderr`` apart."""
    from click.testing import CliRunner, Result
    from papermill.cli import papermill

    seen: dict[str, Result] = {}

    def help_text(nb) -> Result:
        if str(nb) not in seen:
            res = CliRunner().invoke(papermill, ["--help-notebook", str(nb)])
            assert res.exit_code == 0, res.output
            seen[str(nb)] = res
        return seen[str(nb)]

    return help_text


@pytest.fixture(scope="session")
def smoke_budget():
    from vlmlab.budgets import get_budget

    return get_budget("smoke")


@pytest.fixture(scope="session")
def world():
    from vlmlab.world import World

    return World(seed=0)


def make_tiny_backbones(world, budget):
    """Backbones with random weights at the smoke budget's shapes: for fidelity tests of the mechanisms."""
    from vlmlab.backbones import Backbones
    from vlmlab.backbones.pretrain import make_lm, new_vision_encoder
    from vlmlab.backbones.vision import MAEDecoder

    torch.manual_seed(0)
    tok = world.tokenizer
    lm = make_lm(len(tok), budget, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id).eval()
    cl = new_vision_encoder(world, budget).eval()
    mim = new_vision_encoder(world, budget, budget.mim_patch).eval()
    dec = MAEDecoder(budget.vit_dim, budget.mae_dec_dim, budget.mae_dec_depth, 1, mim.grid ** 2,
                     budget.mim_patch ** 2 * 3).eval()
    return Backbones(tok, lm, cl, mim, dec, budget.mim_patch, budget.mim_mask_ratio)


@pytest.fixture(scope="session")
def tiny_backbones(world, smoke_budget):
    return make_tiny_backbones(world, smoke_budget)


@pytest.fixture
def batch(world):
    """A small QA batch from the test split (8 samples: one per category)."""
    return world.batch("qa", "test", 0, 8)


def run_stage_backward(model, stage, world, n: int = 4):
    """Set the stage's trainable set, backpropagate its loss on one batch of its task."""
    from vlmlab.train import set_trainable

    set_trainable(model, stage.trainable)
    getattr(model, f"loss_{stage.loss}")(world.batch(stage.task, "train", 0, n)).backward()


def assert_only_trainable_get_gradients(model, stage):
    """Every parameter of the stage's trainable set gets a non-zero gradient; every other one gets none."""
    trainable = {id(p) for n in stage.trainable for p in model.get_submodule(n).parameters()}
    for name, p in model.named_parameters():
        if id(p) in trainable:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


@pytest.fixture
def live_widgets(monkeypatch):
    """For tests of the interactive views themselves: build the real widgets (no batch-mode note)."""
    monkeypatch.delenv("VLMLAB_BATCH", raising=False)
