"""The teaching notebooks execute under papermill at the smoke budget and leave their figures and computed
conclusions in the executed copy; the probes and the static widget fallbacks they rely on behave."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import nbformat
import numpy as np
import pytest
import torch

from vlmlab.world import World

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
# notebook -> the least number of figures (image/png outputs) its smoke execution must leave
TEACHING = {"00_quickstart.ipynb": 2, "01_world.ipynb": 4, "02_backbones.ipynb": 6}


@pytest.mark.parametrize("name", sorted(TEACHING), ids=str)
def test_teaching_notebook_smoke(name, tmp_path):
    import papermill as pm

    src = ROOT / "notebooks" / name
    assert not any(c.get("outputs") for c in nbformat.read(src, as_version=4).cells), "commit notebooks clean"
    out = tmp_path / name
    # the kernel inherits VLMLAB_CACHE from conftest: smoke backbones come from the session's temporary cache
    pm.execute_notebook(str(src), str(out), parameters={"budget": "smoke"}, kernel_name="python3",
                        cwd=str(tmp_path), progress_bar=False, log_output=False)
    outputs = [o for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= TEACHING[name], f"{name}: {len(images)} figures"
    # every notebook states its conclusions as markdown computed from its measurements
    assert any("text/markdown" in o.get("data", {}) for o in outputs)


# ---- the library code the notebooks share ---------------------------------------------------------------------
def test_probe_reads_a_linearly_encoded_attribute_and_not_noise():
    from vlmlab.probes import fit_probe

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (600,), generator=g)
    codes = torch.randn(3, 16, generator=g)
    noise = torch.randn(600, 16, generator=g)
    x = codes[y] + 0.3 * noise
    p = fit_probe(x[:400], y[:400].numpy(), ("a", "b", "c"))
    assert (p.predict(x[400:]) == y[400:].numpy()).mean() > 0.95
    p_noise = fit_probe(noise[:400], y[:400].numpy(), ("a", "b", "c"))
    assert (p_noise.predict(noise[400:]) == y[400:].numpy()).mean() < 0.5  # chance is 1/3
    again = fit_probe(x[:400], y[:400].numpy(), ("a", "b", "c"))
    assert torch.equal(again.weight, p.weight)  # deterministic
    ridge = fit_probe(x[:400], y[:400].numpy(), ("a", "b", "c"), method="ridge")
    assert (ridge.predict(x[400:]) == y[400:].numpy()).mean() > 0.95


def test_cell_features_pick_the_objects_cell(world, tiny_backbones):
    from vlmlab.probes import cell_features, object_table

    samples = world.samples("test", 0, 6)
    objs = object_table(samples)
    assert len(objs) == sum(len(s.scene) for s in samples)
    enc = tiny_backbones.cl
    feats = cell_features(enc, samples, [-1, 0], objs, batch=4)  # batches split the scenes
    assert set(feats) == {enc.depth - 1, 0} and feats[0].shape == (len(objs), enc.dim)
    full = enc(World.images(samples), layers=[0])[0]  # [S, N, d]
    j = len(objs) - 1
    token = int(objs.row[j]) * enc.grid + int(objs.col[j])
    assert torch.allclose(feats[0][j].float(), full[objs.sample[j], token], atol=1e-5)
    px = cell_features("pixels", samples, [], objs)[-1]
    c = world.config.cell
    s, r, col = objs.sample[0], objs.row[0], objs.col[0]
    cell = samples[s].image[r * c:(r + 1) * c, col * c:(col + 1) * c] / 255.0  # [c, c, 3]
    assert np.allclose(px[0].view(3, c, c).permute(1, 2, 0).numpy(), cell, atol=1e-6)


def test_fit_probes_tidy_table_and_static_views(world, tiny_backbones, live_widgets):
    import matplotlib.pyplot as plt

    from vlmlab.plots import answer_shares, probe_bars
    from vlmlab.probes import ATTRIBUTES, fit_probes, probe_predictions
    from vlmlab.widgets import probe_card, scene_browser, scene_card, scene_grid

    enc = {"CL": tiny_backbones.cl, "MIM": tiny_backbones.mim}
    table, probes = fit_probes(enc, world, [-1], train_scenes=40, test_scenes=20, splits=("test", "compositional"))
    assert len(table) == (2 + 1) * len(ATTRIBUTES) * 2  # (CL, MIM, pixels) x attributes x splits
    assert table["accuracy"].between(0, 100).all() and table["chance"].between(0, 100).all()
    assert set(table["encoder"]) == {"CL", "MIM", "pixels"}
    s = world.sample("compositional", 0)
    pred = probe_predictions({**enc, "pixels": "pixels"}, probes, [s], -1)
    assert len(pred) == 3 * len(ATTRIBUTES) * len(s.scene) and pred["held_out"].any()
    for fig in (probe_bars(table), answer_shares(world.samples("train", 0, 16)), scene_card(s),
                scene_grid(world.samples("train", 0, 3)), probe_card(s, pred)):
        assert fig.axes
        plt.close(fig)
    assert scene_browser(world).children  # the widget builds without a front end
    with pytest.raises(ValueError, match="attributes"):
        fit_probes(enc, world, [-1], train_scenes=4, test_scenes=2, attributes=("position",))


def test_position_probes_read_the_cell_from_sincos_tokens_and_not_from_raw_pixels(world, tiny_backbones):
    from vlmlab.probes import POSITION, fit_probes, object_table

    objs = object_table(world.samples("test", 0, 5), POSITION)
    assert objs.classes["row"][0] == "r0" and (objs.labels["col"] == objs.col).all()
    table, _ = fit_probes({"CL": tiny_backbones.cl}, world, [0], train_scenes=150, test_scenes=100,
                          attributes=POSITION)
    acc = table.set_index(["encoder", "attribute"])["accuracy"]
    chance = table.set_index(["encoder", "attribute"])["chance"]
    for a in POSITION:
        # untrained weights, but the fixed sin-cos code is in every token: the cell is linearly readable ...
        assert acc[("CL", a)] > 75, table
        # ... while a cell's pixels look the same wherever the cell is
        assert acc[("pixels", a)] < chance[("pixels", a)] + 15 < acc[("CL", a)] - 30, table


def test_best_blocks_picks_each_encoders_best_block_per_attribute_and_keeps_pixels_apart():
    import pandas as pd

    from vlmlab.probes import best_blocks

    table = pd.DataFrame([
        {"encoder": "CL", "block": 0, "attribute": "row", "accuracy": 40.0},
        {"encoder": "CL", "block": 2, "attribute": "row", "accuracy": 90.0},
        {"encoder": "CL", "block": 0, "attribute": "col", "accuracy": 80.0},
        {"encoder": "CL", "block": 2, "attribute": "col", "accuracy": 70.0},
        {"encoder": "MIM", "block": 1, "attribute": "row", "accuracy": 60.0},
        {"encoder": "pixels", "block": None, "attribute": "row", "accuracy": 99.0},
    ])
    best, pixels = best_blocks(table)
    assert best.loc[("CL", "row"), "block"] == 2 and best.loc[("CL", "col"), "block"] == 0
    assert best.loc[("MIM", "row"), "accuracy"] == 60.0
    assert "pixels" not in best.index.get_level_values("encoder")  # the raw-pixel row never wins a block
    assert pixels.loc["row", "accuracy"] == 99.0


def test_interactive_views_are_widgets_live_and_a_note_in_batch_runs(world, monkeypatch):
    import ipywidgets as W
    from IPython.display import Markdown

    from vlmlab.widgets import scene_browser

    monkeypatch.delenv("VLMLAB_BATCH", raising=False)
    live = scene_browser(world, max_index=5)
    assert isinstance(live, W.VBox)
    slider = live.children[0].children[1]
    assert slider.max == 5
    monkeypatch.setenv("VLMLAB_BATCH", "1")
    note = scene_browser(world)
    assert isinstance(note, Markdown) and "static figure" in note.data
