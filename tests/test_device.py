"""Device helpers: the compiled-forward wrapper falls back to eager maths, never to an error."""
from __future__ import annotations

import pytest
import torch

from vlmlab import device as dev


def test_compiled_falls_back_to_eager_when_compiling_fails(monkeypatch):
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)

    def broken(*_a, **_k):
        def fail(*_a, **_k):
            raise RuntimeError("no C compiler")
        return fail

    monkeypatch.setattr(dev.torch, "compile", broken)
    monkeypatch.setattr(dev.shutil, "which", lambda _name: "/usr/bin/cc")
    f = dev.Compiled(lin)
    assert f.compiled
    with pytest.warns(UserWarning, match="torch.compile failed.*no C compiler"):
        y = f(x)
    assert not f.compiled and torch.equal(y, lin(x))


@pytest.mark.parametrize("env, enabled", [("0", True), ("1", False)])
def test_compiled_can_be_switched_off(monkeypatch, env, enabled):
    monkeypatch.setenv("VLMLAB_COMPILE", env)
    monkeypatch.setattr(dev.torch, "compile", lambda *_a, **_k: pytest.fail("compiled although switched off"))
    f = dev.Compiled(torch.nn.Linear(2, 2), enabled=enabled)
    assert not f.compiled
    x = torch.randn(1, 2)
    assert torch.equal(f(x), f.module(x))
