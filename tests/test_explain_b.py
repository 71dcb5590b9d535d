"""Explain modules of the HoVLE, X-Former and LLaViT notebooks and the shared attention views, on tiny
random-weight models; plus one papermill smoke run per notebook."""
from __future__ import annotations

from pathlib import Path

import matplotlib
import nbformat
import pytest
import torch

from vlmlab.archs import build
from vlmlab.explain import attention as xa

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _model(arch, bb, budget, **knobs):
    torch.manual_seed(0)
    return build(arch, bb, budget, knobs).eval()


# ---- shared attention views -----------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llava", "ovis", "hovle", "xformer", "llavit"])
def test_answer_attention_matches_the_model_and_maps_tokens_honestly(arch, tiny_backbones, smoke_budget, world):
    m = _model(arch, tiny_backbones, smoke_budget)
    batch = world.batch(m.eval_task, "test", 0, 3)
    att = xa.answer_attention(m, batch)
    cfg = m.lm.config
    assert att.weights.shape[:3] == (3, cfg.num_hidden_layers, cfg.num_attention_heads)
    # its mean over layers and heads is the model's own diagnostic
    assert torch.allclose(att.select(), m.answer_attention(batch).float().cpu(), atol=1e-6)
    # softmax rows: image part + the rest = 1 in every layer and head
    assert torch.allclose(att.weights.sum(-1) + att.text, torch.ones_like(att.text), atol=1e-5)
    assert torch.allclose(att.select(1, 0), att.weights[:, 1, 0])
    lay = att.layout
    if arch == "xformer":
        assert lay.kind == "sequence" and lay.n == m.knobs.n_queries
        with pytest.raises(ValueError, match="queries"):
            att.grid_map(att.select()[0])
    else:
        g = tiny_backbones.cl.grid
        assert lay.kind == "grid" and lay.grid == g and len(lay.spatial) == g * g
        assert lay.extra == ([0, g * g + 1] if arch == "ovis" else [])
        vals = torch.arange(lay.n, dtype=torch.float)
        gm = att.grid_map(vals)  # raster order: cell (r, c) holds spatial token r * g + c
        assert gm[1, 2] == vals[lay.spatial[g + 2]]
    for fig in (xa.attention_card(world.sample("test", 0), att, 0, layer=0, head=1),
                xa.attention_grid(world.samples("test", 0, 3), att)):
        assert fig.axes
        plt.close(fig)


def test_attention_follows_the_mask_and_later_image_mass(tiny_backbones, smoke_budget, world):
    batch = world.batch("qa", "test", 0, 2)
    masses = {}
    for kind in ("causal", "bidirectional"):
        m = _model("llavit", tiny_backbones, smoke_budget, attention=kind)
        out = m.forward_with_attentions(batch)
        inp = m.build_inputs(batch)
        allowed = xa.mask_pair(inp["attention_mask"][0], inp["visual_mask"][0])[kind]
        assert torch.equal(allowed, m.allowed(inp)[0].cpu())  # the same mask the LLM gets
        a = xa.attention_matrix(out, 0)
        assert float(a[~allowed].abs().max()) < 1e-6  # nothing outside the mask
        masses[kind] = xa.later_image_mass(out)
        assert masses[kind].shape == (m.lm.config.num_hidden_layers,)
    assert float(masses["causal"].abs().max()) == 0.0
    assert float(masses["bidirectional"].min()) > 0.0


def test_mask_pair_spans_and_names(world):
    L = 10
    am = torch.ones(L, dtype=torch.long)
    am[-2:] = 0  # padding
    vm = torch.zeros(L, dtype=torch.bool)
    vm[2:6] = True
    masks = xa.mask_pair(am, vm)
    c, b = masks["causal"], masks["bidirectional"]
    assert xa.image_spans(vm) == [(2, 6)]
    assert bool(b[2, 5]) and not bool(c[2, 5])  # an image token sees a later one only when bidirectional
    assert not bool(b[1, 2]) and not bool(b[2, 6])  # text before never sees the image; the image never sees later text
    assert not b[:, -2:].any()  # padded keys off
    assert int((b & ~c).sum()) == 4 * 3 // 2  # the upper triangle of the 4x4 image block
    ids = torch.tensor(world.tokenizer("image : red circle", add_special_tokens=False)["input_ids"] + [0] * 6)
    names = xa.token_names(world.tokenizer, ids, vm)
    assert names[:2] == ["image", ":"] and names[2:6] == ["v0", "v1", "v2", "v3"]
    fig = xa.plot_masks(am, vm, names)
    assert len(fig.axes) == 3
    plt.close(fig)


def test_attention_browser_builds(tiny_backbones, smoke_budget, world):
    m = _model("llava", tiny_backbones, smoke_budget)
    assert xa.attention_browser(m, world, max_index=3).children
