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


def test_attention_browser_builds(tiny_backbones, smoke_budget, world, live_widgets):
    m = _model("llava", tiny_backbones, smoke_budget)
    assert xa.attention_browser(m, world, max_index=3).children


# ---- HoVLE ------------------------------------------------------------------------------------------------------
def test_hovle_walkthrough_distill_similarity_and_cell_influence(tiny_backbones, smoke_budget, world, live_widgets):
    from vlmlab.explain import hovle as xh

    m = _model("hovle", tiny_backbones, smoke_budget)
    batch = world.batch("qa", "test", 0, 3)
    table, t = xh.walkthrough(m, batch)
    g = m.embed.grid
    assert t["patch embeddings"].shape[1] == g * g and t["2x2 pixel shuffle + MLP"].shape[1] == (g // 2) ** 2
    L = batch["input_ids"].shape[1]
    assert t["LLM inputs_embeds"].shape[1] == L + m.n_image_tokens and len(table) == 8
    sim = xh.distill_similarity(m, batch)
    assert sim.image_cos.shape == (3, m.n_image_tokens)
    diag = m.diagnostics(batch)
    assert abs(float(sim.image_cos.mean()) - diag["distill_cos_image"]) < 1e-5
    assert abs(float(sim.text["cos"].mean()) - diag["distill_cos_text"]) < 1e-5
    assert "<img>" not in set(sim.text["word"])  # the marker is excluded, as in the loss
    infl = xh.cell_influence(m, batch)
    assert m.knobs.embed_attention == "causal"  # restored after the bidirectional pass
    assert float(infl["causal"].tril(-1).abs().max()) == 0.0  # earlier tokens never see a later cell
    assert float(infl["causal"].diagonal().min()) > 0  # the changed cell's own token moves
    assert float(infl["bidirectional"].tril(-1).sum()) > 0
    for fig in (xh.distill_card(world.sample("test", 0), sim, 0), xh.distill_grid(world.samples("test", 0, 3), sim),
                xh.module_masks_figure(m, batch), xh.influence_figure(infl, "causal")):
        assert fig.axes
        plt.close(fig)
    assert xh.distill_browser(m, world, max_index=2).children


# ---- X-Former ---------------------------------------------------------------------------------------------------
def test_xformer_cross_attention_weights_reproduce_the_block(tiny_backbones, smoke_budget):
    from vlmlab.explain.xformer import cross_attention_weights

    m = _model("xformer", tiny_backbones, smoke_budget)
    blk = m.qformer.query.ca["0"]
    torch.manual_seed(1)
    x, kv = torch.randn(2, 5, m.width), torch.randn(2, 7, m.width)
    w = cross_attention_weights(blk, x, kv)  # [B, h, 5, 7]
    assert torch.allclose(w.sum(-1), torch.ones(2, blk.heads, 5), atol=1e-5)
    v = blk.v(kv).view(2, 7, blk.heads, -1).transpose(1, 2)
    out = blk.o((w @ v).transpose(1, 2).reshape(2, 5, -1))
    assert torch.allclose(out, blk(x, kv), atol=1e-5)


def test_xformer_walkthrough_fusion_reconstructions_and_queries(tiny_backbones, smoke_budget, world, live_widgets):
    from vlmlab.explain import xformer as xx

    m = _model("xformer", tiny_backbones, smoke_budget)
    batch = world.batch("qa", "test", 0, 2)
    table, t = xx.walkthrough(m, batch)
    assert t["prefix = FC(Z')"].shape == (2, m.knobs.n_queries, m.d_lm)
    assert t["C (CL stream)"].shape[1] == m.cl.grid ** 2 and t["M (MIM stream, inference)"].shape[1] == 1 + m.mim.grid ** 2
    assert t["M (MIM stream, stage 1)"].shape[1] == 1 + round(m.mim.grid ** 2 * (1 - m.knobs.mae_mask_ratio))
    change = xx.fusion_change(m, batch)
    assert all(v == 0.0 for v in change.values())  # zero-initialised CA-1 / CA-2: the model is BLIP-2 at step 0
    rec = xx.reconstructions(m, batch["pixel_values"])
    assert len(rec["target"]) == 2 and rec["target"][0].shape == batch["pixel_values"][0].shape
    assert rec["mse"][1] == pytest.approx(m.reconstruction_error(batch["pixel_values"][1:], seed=1)["rec_mse"], abs=1e-6)
    assert rec["mse"] == pytest.approx(rec["mse_mae_only"], abs=1e-6)  # no fusion effect at init
    assert m.fusion is not None  # restored after the MAE-only pass
    qa = xx.query_attention(m, batch["pixel_values"])
    assert qa["cl"].shape == (2, m.knobs.n_queries, m.cl.grid ** 2) and qa["mae"].shape[-1] == m.mim.grid ** 2
    assert torch.allclose(qa["cl"].sum(-1), torch.ones(2, m.knobs.n_queries), atol=1e-5)
    assert torch.allclose(qa["mae"].sum(-1) + qa["mae_cls"], torch.ones(2, m.knobs.n_queries), atol=1e-5)
    sim, same = xx.itc_matrix(m, world.batch("caption", "test", 0, 4))
    assert sim.shape == (4, 4) and same.diagonal().all()
    record = {"diagnostics": {"stage1_losses": {"itc": [2.0, 1.0], "rec": [1.0, 0.9]}}, "losses": {"stage1": [3.0, 2.0]}}
    assert xx.stage1_loss_table(record).loc["itc", "change"] == -1.0
    for fig in (xx.reconstruction_figure(rec, world.samples("test", 0, 2)), xx.query_card(world.sample("test", 0), qa, 0),
                xx.query_grid(world.samples("test", 0, 2), qa, "mae"), xx.stage1_loss_figure(record),
                xx.itc_figure(sim, same)):
        assert fig.axes
        plt.close(fig)
    assert xx.query_browser(m, world, max_index=2).children


# ---- LLaViT -----------------------------------------------------------------------------------------------------
def test_llavit_walkthrough_blocks_and_qkv_divergence(tiny_backbones, smoke_budget, world):
    from vlmlab.explain import llavit as xl

    batch = world.batch("qa", "test", 0, 2)
    m = _model("llavit", tiny_backbones, smoke_budget, layers="0,1")
    table, t = xl.walkthrough(m, batch)
    assert t["concatenated on channels"].shape[-1] == 2 * m.vision.dim
    assert t["concatenated on channels"].shape[1] == t["ViT block 0"].shape[1]  # channels, not tokens
    w = xl.projector_block_weights(m)
    assert list(w["ViT block"]) == [0, 1] and w["share of squared norm"].sum() == pytest.approx(1.0)
    assert xl.block_similarity(m, batch["pixel_values"]).shape == (2, 2)
    div = xl.qkv_divergence(m, batch)
    assert len(div) == 3 * m.lm.config.num_hidden_layers
    assert div["relative difference"].abs().max() < 1e-6  # copy-initialised: W_vis x = W_text x
    rnd = _model("llavit", tiny_backbones, smoke_budget, visual_qkv_init="random")
    assert xl.qkv_divergence(rnd, batch)["relative difference"].min() > 0.1
    assert len(xl.qkv_divergence(_model("llavit", tiny_backbones, smoke_budget, visual_qkv="shared"), batch)) == 0
    fig = xl.qkv_figure(div, {"q": 0.0})
    plt.close(fig)


# ---- the notebooks ----------------------------------------------------------------------------------------------
NOTEBOOKS = {"13_hovle.ipynb": 6, "14_xformer.ipynb": 8, "15_llavit.ipynb": 6}  # least figures a smoke run leaves


@pytest.mark.parametrize("name", sorted(NOTEBOOKS), ids=str)
def test_teaching_notebook_b_smoke(name, tmp_path):
    import papermill as pm

    src = ROOT / "notebooks" / name
    nb = nbformat.read(src, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells), "commit notebooks clean"
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and 'budget: str = "default"' in params[0].source and "seed: int" in params[0].source
    out = tmp_path / name
    # execution_timeout: nbclient sometimes never sees the execute_reply of a cell that displays a widget
    # (jupyter/nbclient#312); with a timeout it moves on with the cell's outputs intact instead of hanging
    params = {"budget": "smoke", "claim_seeds": 2, "store": str(tmp_path / "store")} if name != "14_xformer.ipynb" else {"budget": "smoke"}
    pm.execute_notebook(str(src), str(out), parameters=params, kernel_name="python3",
                        cwd=str(tmp_path), progress_bar=False, log_output=False, execution_timeout=240)
    outputs = [o for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= NOTEBOOKS[name], f"{name}: {len(images)} figures"
    assert sum("text/markdown" in o.get("data", {}) for o in outputs) >= 3  # computed statements
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    if name != "14_xformer.ipynb":  # the paper's claim, tested on 2 seeds: too few for a verdict
        md = "\n".join(o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {}))
        assert "**Verdict: inconclusive**" in md and "over 2 seeds" in md
