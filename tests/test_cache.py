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


def test_fingerprint_follows_the_content_not_the_location(tmp_path):
    """Results computed from a backbone are keyed by its fingerprint: a copied cache keeps it, a rebuild with
    other weights under the same entry name changes it."""
    import shutil

    cfg = {"a": 1}
    path = cache.store("thing", cfg, _write, root=tmp_path / "here")
    moved = tmp_path / "there" / path.name
    shutil.copytree(path, moved)
    assert cache.fingerprint(moved) == cache.fingerprint(str(path)) != str(path)
    rebuilt = cache.store("thing", cfg, lambda tmp: (tmp / "weights.bin").write_bytes(b"xyz" * 100),
                          root=tmp_path / "again")
    assert rebuilt.name == path.name and cache.fingerprint(rebuilt) != cache.fingerprint(path)
    # a real checkpoint's path or a timm name is not a cache entry: it stands for itself
    assert cache.fingerprint("vit_tiny@/ckpt/x") == "vit_tiny@/ckpt/x" and cache.fingerprint(None) is None


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


def test_only_the_backbones_asked_for_are_built(tmp_path, smoke_budget, capsys):
    """A LLaVA run needs the LM and the CL encoder: loading those two builds no MIM entry, and leaves the MIM
    fields None; asking for all three later builds the MIM encoder (announced) and reuses the other two."""
    from vlmlab.backbones import load_backbones

    bb = load_backbones(budget=smoke_budget, root=tmp_path, progress=False, kinds=("lm", "cl"))
    assert set(bb.paths) == {"lm", "cl"} and bb.mim is None and bb.mim_decoder is None and bb.cl is not None
    built = sorted(p.name.split("-")[0] for p in tmp_path.iterdir() if p.is_dir())
    assert built == ["cl", "lm"]
    err = capsys.readouterr().err
    assert "building the LM backbone" in err and "building the MIM" not in err
    full = load_backbones(budget=smoke_budget, root=tmp_path, progress=False)
    err = capsys.readouterr().err
    assert "building the MIM backbone" in err and "building the LM" not in err and "building the CL" not in err
    assert full.paths["lm"] == bb.paths["lm"] and full.paths["cl"] == bb.paths["cl"] and full.mim is not None


@pytest.mark.parametrize("kinds, pattern", [(("lm", "vit"), r"kinds=.*allowed values.*'lm', 'cl', 'mim'"),
                                            ((), r"kinds=\[\]"), (("cl",), r"include 'lm'")])
def test_bad_backbone_kinds_are_rejected_before_building(tmp_path, smoke_budget, kinds, pattern):
    from vlmlab.backbones import load_backbones

    with pytest.raises(ValueError, match=pattern):
        load_backbones(budget=smoke_budget, root=tmp_path, progress=False, kinds=kinds)
    assert not any(tmp_path.iterdir())


def test_each_arch_names_the_backbones_it_reads():
    from vlmlab.archs import backbones_needed

    assert backbones_needed("llava") == ("lm", "cl")
    assert backbones_needed("llava", {"encoder": "mim"}) == ("lm", "mim")
    assert backbones_needed("xformer") == ("lm", "cl", "mim")
    assert backbones_needed("xformer", {"features": "cl", "fusion": "none", "rec_stage1": False,
                                         "rec_stage2": False}) == ("lm", "cl")
    assert backbones_needed("xformer", {"features": "mim"}) == ("lm", "mim")
    for arch in ("ovis", "vwlmm", "hovle", "llavit"):
        assert backbones_needed(arch) == ("lm", "cl")
    assert backbones_needed("blind") == backbones_needed("oracle") == ("lm",)
    with pytest.raises(ValueError, match="encoder"):
        backbones_needed("llava", {"encoder": "clip"})
