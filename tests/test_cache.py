"""The backbone cache: content-addressed, atomic, corrupt entries detected and rebuilt."""
from __future__ import annotations

import pytest
import torch

from vlmlab.backbones import cache


def _write(tmp):
    (tmp / "weights.bin").write_bytes(b"abc" * 100)


def test_store_then_lookup(tmp_path):
    cfg = {"a": 1}
    path = cache.store("thing", cfg, _write, root=tmp_path)
    assert cache.lookup("thing", cfg, root=tmp_path) == path
    assert cache.lookup("thing", {"a": 2}, root=tmp_path) is None  # another config, another key


def test_corrupt_entry_is_detected_and_removed(tmp_path):
    cfg = {"a": 1}
    path = cache.store("thing", cfg, _write, root=tmp_path)
    (path / "weights.bin").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="corrupt"):
        assert cache.lookup("thing", cfg, root=tmp_path) is None
    assert not path.exists()


def test_partial_entry_without_manifest_is_rebuilt(tmp_path):
    cfg = {"a": 1}
    path = cache.entry_dir("thing", cfg, root=tmp_path)
    path.mkdir(parents=True)
    (path / "weights.bin").write_bytes(b"half")
    with pytest.warns(UserWarning):
        assert cache.lookup("thing", cfg, root=tmp_path) is None


def test_failed_write_leaves_nothing(tmp_path):
    def boom(tmp):
        (tmp / "x").write_text("partial")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.store("thing", {"a": 1}, boom, root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_load_backbones_rebuilds_a_corrupt_entry(tmp_path, smoke_budget, capsys):
    from vlmlab.backbones import load_backbones

    bb = load_backbones(budget=smoke_budget, root=tmp_path, progress=False)
    # pretraining and a reload leave the fixed sin-cos position codes of both ViTs and the MAE decoder untouched
    from vlmlab.backbones.vision import sincos_2d
    assert smoke_budget.vit_pos_embed == "sincos"
    for enc in (bb.cl, bb.mim):
        assert torch.equal(enc.vit.pos_embed, sincos_2d(enc.grid, enc.dim))
    assert torch.equal(bb.mim_decoder.pos, sincos_2d(bb.mim.grid, smoke_budget.mae_dec_dim))
    lm_dir = tmp_path / bb.paths["lm"].split("/")[-1]
    target = next((lm_dir / "lm").glob("*.safetensors"))
    target.unlink()  # (the loaded model may memory-map the old file: replace it, don't truncate it in place)
    target.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="corrupt"):
        bb2 = load_backbones(budget=smoke_budget, root=tmp_path, progress=False)
    assert "building the LM backbone" in capsys.readouterr().err
    # deterministic pretraining: the rebuilt LM equals the original
    for (n, p), (_, q) in zip(bb.lm.state_dict().items(), bb2.lm.state_dict().items()):
        assert (p == q).all(), n
