"""The shipped backbones (data/backbones/): the current code's default ones, intact, loaded without building and
really pretrained; the lookup order cache -> shipped -> build; a damaged shipped entry is ignored, never removed."""
from __future__ import annotations

import shutil

import pytest

from vlmlab.backbones import KINDS, cache, ensure_backbones, load_backbones
from vlmlab.backbones import store as store_mod
from vlmlab.backbones.store import _keys, ship_backbones
from vlmlab.budgets import get_budget
from vlmlab.world import WorldConfig


def test_the_shipped_backbones_are_exactly_the_current_default_ones():
    """Fails when pretraining changes (its keys) until the new builds ship (tools/ship_backbones.py)."""
    root = cache.shipped_root()
    assert root is not None and root.is_dir()
    keys = _keys(WorldConfig(), get_budget("default"))
    expected = {cache.entry_dir(k, keys[k], root).name for k in KINDS}
    present = {p.name for p in root.iterdir() if p.is_dir()}
    assert present == expected, ("data/backbones/ does not hold the current code's default backbones: build them "
                                 "(`vlmlab pretrain --budget default`) and run `python tools/ship_backbones.py`")
    for name in expected:
        assert cache.is_valid(root / name), f"{name} does not match its MANIFEST.json"
        assert name in (root / "README.md").read_text(), f"data/backbones/README.md does not describe {name}"


def test_shipped_default_backbones_load_without_building_and_read_scenes(tmp_path, capsys):
    """An empty cache and building forbidden: the LM and CL ViT come from data/backbones/ (announced), nothing is
    written to the cache, and the LM is the pretrained one: reading the scene text it answers well above chance."""
    from vlmlab.evaluate import evaluate
    from vlmlab.runs import build
    from vlmlab.world import World

    store_mod._ANNOUNCED.clear()
    b = get_budget("default")
    bb = load_backbones(budget=b, root=tmp_path, build=False, progress=False, kinds=("lm", "cl"))
    assert all(str(cache.shipped_root()) in p for p in bb.paths.values())
    assert not any(tmp_path.iterdir())
    err = capsys.readouterr().err
    assert "using the shipped LM backbone" in err and "using the shipped CL backbone" in err
    res = evaluate(build("oracle", bb, b), World(WorldConfig(), seed=0), n_per_category=20, batch_size=160,
                   splits=("test",))
    # measured 93 % over 500 questions per category; chance is 38.5 %. Random weights answer at chance
    assert res["test"]["overall"] > 0.8, res["test"]
    load_backbones(budget=b, root=tmp_path, build=False, progress=False, kinds=("lm",))
    assert "using the shipped" not in capsys.readouterr().err  # announced once per process


@pytest.fixture(scope="module")
def smoke_built(tmp_path_factory, smoke_budget):
    root = tmp_path_factory.mktemp("built")
    ensure_backbones(budget=smoke_budget, root=root, progress=False)
    return root


@pytest.fixture
def shipped_smoke(tmp_path, smoke_budget, smoke_built):
    """Smoke backbones built into one cache (a copy per test) and shipped into a second folder; a third, empty
    cache."""
    built, shipped, empty = tmp_path / "built", tmp_path / "shipped", tmp_path / "empty"
    shutil.copytree(smoke_built, built)
    paths = ship_backbones(smoke_budget, root=built, dest=shipped)
    store_mod._ANNOUNCED.clear()
    return built, shipped, empty, paths


def _no_building(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("built a backbone although one was cached or shipped")
    monkeypatch.setattr(store_mod, "_build", fail)


def test_ship_copies_the_entries_and_removes_stale_ones(shipped_smoke, smoke_budget):
    built, shipped, _, paths = shipped_smoke
    assert sorted(p.name for p in paths) == sorted(p.name for p in built.iterdir() if p.is_dir())
    assert all(cache.is_valid(p) for p in paths)
    stale = shipped / "lm-0000000000000000"
    shutil.copytree(paths[0], stale)
    (shipped / "README.md").write_text("kept")
    ship_backbones(smoke_budget, root=built, dest=shipped)
    assert not stale.exists() and (shipped / "README.md").read_text() == "kept"
    with pytest.raises(FileNotFoundError, match="vlmlab pretrain --budget smoke"):
        ship_backbones(smoke_budget, root=shipped / "nothing", dest=shipped)
    assert all(p.exists() for p in paths)  # a failed ship changes nothing


def test_an_empty_cache_reads_the_shipped_entries(shipped_smoke, smoke_budget, monkeypatch, capsys):
    _, shipped, empty, paths = shipped_smoke
    _no_building(monkeypatch)
    got, _ = ensure_backbones(budget=smoke_budget, root=empty, shipped=shipped, progress=False)
    assert sorted(map(str, got.values())) == sorted(map(str, paths))
    assert not empty.exists() or not any(p.is_dir() for p in empty.iterdir())
    assert capsys.readouterr().err.count("using the shipped") == 3


def test_the_cache_comes_before_the_shipped_entries(shipped_smoke, smoke_budget, monkeypatch):
    built, shipped, _, _ = shipped_smoke
    _no_building(monkeypatch)
    got, _ = ensure_backbones(budget=smoke_budget, root=built, shipped=shipped, progress=False)
    assert all(p.parent == built for p in got.values())


def test_a_damaged_shipped_entry_is_ignored_not_removed(shipped_smoke, smoke_budget, capsys):
    _, shipped, empty, paths = shipped_smoke
    lm = next(p for p in paths if p.name.startswith("lm-"))
    weights = next((lm / "lm").glob("*.safetensors"))
    weights.write_bytes(b"version https://git-lfs.github.com/spec/v1\n")  # what a Git LFS pointer looks like
    with pytest.warns(UserWarning, match="does not match its manifest"):
        got, _ = ensure_backbones(budget=smoke_budget, root=empty, shipped=shipped, progress=False, kinds=("lm",))
    assert got["lm"].parent == empty and cache.is_valid(got["lm"])
    assert "building the LM backbone" in capsys.readouterr().err
    assert weights.read_bytes().startswith(b"version")  # still there, untouched


def test_rebuild_builds_even_when_cached_and_shipped(shipped_smoke, smoke_budget, capsys):
    built, shipped, _, _ = shipped_smoke
    got, _ = ensure_backbones(budget=smoke_budget, root=built, shipped=shipped, progress=False, kinds=("lm",),
                              rebuild=True)
    assert got["lm"].parent == built and cache.is_valid(got["lm"])
    assert "building the LM backbone" in capsys.readouterr().err


@pytest.mark.parametrize("value, used", [("0", False), ("1", True), ("", True)])
def test_vlmlab_shipped_env(monkeypatch, value, used):
    monkeypatch.setenv(cache.SHIPPED_ENV, value)
    assert (cache.shipped_root() is not None) == used


def test_a_bad_vlmlab_shipped_value_names_the_variable_and_the_allowed_values(monkeypatch):
    monkeypatch.setenv(cache.SHIPPED_ENV, "yes")
    with pytest.raises(ValueError, match=r"VLMLAB_SHIPPED='yes'.*allowed values: 0 .* or 1"):
        cache.shipped_root()


def test_pretrain_cli_has_rebuild(capsys):
    from vlmlab.cli import main

    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "--rebuild" in capsys.readouterr().out
