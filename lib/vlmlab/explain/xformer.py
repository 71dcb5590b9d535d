"""X-Former explained on real tensors (notebook 14): the CL and MIM streams, the Q-Former's queries, the dual
cross-attention fusion, the MAE reconstruction of masked patches, and the stage-1 losses.

All tensors come from the model's own functions (``clip_tokens``, ``mae_tokens``, ``qformer``, ``fusion``,
``reconstruct``, ``reconstruction_error``, ``itc_similarity``). The only recomputation is of *attention weights*
inside two cross-attention blocks, whose ``F.scaled_dot_product_attention`` does not return them: forward hooks
capture the blocks' real inputs and :func:`cross_attention_weights` applies the block's own q/k projections and
the softmax. The two encoders may have different grids (the MIM encoder's patch can be smaller than the CL
one's): every map reads ``encoder.grid`` and never assumes they match. See :mod:`vlmlab.archs.xformer`.

=====================  ===================================  =====================================
view (widget)          static fallback                       shows
=====================  ===================================  =====================================
``query_browser``      ``query_card``, ``query_grid``        where each query looks: its cross-attention
                                                              over the CL patches and over the MAE tokens
=====================  ===================================  =====================================
"""
from __future__ import annotations

import contextlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
import torch.nn.functional as F
from ..archs.base import eval_mode
from . import steps_table
from ..widgets import figure_panel, interactive_view


# ---- the forward pass step by step -------------------------------------------------------------------------------
@torch.no_grad()
def walkthrough(model, batch: dict, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """X-Former's forward pass on a real batch: (table of the steps with their shapes, the tensors).

    The inference path (MAE stream unmasked unless ``mask_at_inference``) plus, for the reconstruction, the
    stage-1 MAE stream masked at ``mae_mask_ratio`` (fixed ``seed``).
    """
    dev = model.device
    pix = batch["pixel_values"].to(dev)
    k = model.knobs
    with eval_mode(model):
        s = model.streams(pix)
        qf = model.qformer_pass(s["feats"], s["m"])
        prefix = model.fc(qf["z"])
        out = model.forward(batch)
        masked = None
        if model.uses_mae:
            gen = torch.Generator(device=dev).manual_seed(seed)
            masked = model.mae_tokens(pix, True, gen)
    c_enc = model.c_encoder
    steps = [("pixels", pix, "the image, RGB in [0, 1]"),
             ("C (CL stream)" if k.features != "mim" else "C (MIM encoder as C)", s["c"],
              f"frozen ViT block {k.feature_layer}, {c_enc.grid}x{c_enc.grid} patches of {c_enc.patch} px, "
              "CLS dropped")]
    if model.uses_mae:
        m_enc = model.mim
        steps.append(("M (MIM stream, inference)", s["m"],
                      f"frozen MAE encoder over all {m_enc.grid}x{m_enc.grid} patches of {m_enc.patch} px, "
                      "CLS first" + (" (masked: mask_at_inference)" if k.mask_at_inference else "")))
        steps.append(("M (MIM stream, stage 1)", masked[0],
                      f"only the visible {int((masked[2][0] == 0).sum())} of {masked[2].shape[1]} patches "
                      f"(mask ratio {k.mae_mask_ratio}), CLS first"))
    steps.append(("Q-Former input", s["feats"], "LN(C)" + (" concatenated with LN'(M)" if k.fusion == "concat" else "")))
    steps.append(("queries", model.qformer.query.tokens, f"{k.n_queries} learned query vectors"))
    steps.append(("Z_q (Q-Former output)", qf["z_q"],
                  f"{k.qformer_layers} layers: self-attention, cross-attention to the image features, FFN"))
    if qf["m_fused"] is not None:
        steps.append(("M' = M + CA-1(M <- Z_q)", qf["m_fused"], "global semantics of the queries into the MAE tokens"))
        steps.append(("Z' = Z_q + CA-2(Z_q <- M')", qf["z"], "local detail of the MAE tokens into the queries"))
    steps.append(("prefix = FC(Z')", prefix, f"{k.n_queries} soft tokens in the LLM's input space"))
    steps.append(("LLM inputs_embeds", out["inputs_embeds"], "the prefix replaces <img> in the prompt"))
    steps.append(("LLM logits", out["logits"], "next-token scores"))
    table = steps_table(steps)
    tensors = {n: t for n, t, _ in steps} | {"streams": s, "qformer": qf, "masked": masked, "out": out}
    return table, tensors


@torch.no_grad()
def fusion_change(model, batch: dict, seed: int = 0) -> dict:
    """How much the dual cross-attention changes its inputs, relative: ||M' - M|| / ||M|| and ||Z' - Z_q|| /
    ||Z_q||, mean over tokens and samples, on the stage-1 (masked) MAE stream. Both are 0 before training (the
    output projections start at zero)."""
    if model.fusion is None:
        return {}
    with eval_mode(model):
        pix = batch["pixel_values"].to(model.device)
        gen = torch.Generator(device=model.device).manual_seed(seed)
        m, _, _ = model.mae_tokens(pix, True, gen)
        z_q, _ = model.qformer(model.qformer.encode_features(model.clip_tokens(pix), m))
        z, m_fused = model.fusion(z_q, m)
    rel = lambda a, b: float(((a - b).norm(dim=-1) / b.norm(dim=-1).clamp(min=1e-8)).mean())  # noqa: E731
    return {"CA-1: |M'-M|/|M|": rel(m_fused, m), "CA-2: |Z'-Z_q|/|Z_q|": rel(z, z_q)}


# ---- reconstruction ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def without_fusion(model):
    """The same model without its dual cross-attention inside the block (decoder(M) instead of decoder(M'))."""
    fusion = model.fusion
    model.fusion = None
    try:
        yield
    finally:
        model.fusion = fusion


@torch.no_grad()
def reconstructions(model, pixel_values: torch.Tensor, seed: int = 0) -> dict:
    """Per sample (seed + i, so each sample's mask is its own and reproducible): masked input, reconstruction
    through decoder(M'), the frozen MAE's own reconstruction decoder(M), target, and both masked-patch MSEs."""
    if not model.uses_mae:
        raise ValueError("X-Former without an MAE stream (features='cl') reconstructs nothing")
    rows = {"masked": [], "fused": [], "mae_only": [], "target": [], "mse": [], "mse_mae_only": []}
    for i in range(len(pixel_values)):
        px = pixel_values[i:i + 1]
        masked, rec, target = model.reconstruct(px, seed=seed + i)
        with without_fusion(model):
            _, rec_mae, _ = model.reconstruct(px, seed=seed + i)
        err = model.reconstruction_error(px, seed=seed + i)
        rows["masked"].append(masked[0].cpu())
        rows["fused"].append(rec[0].cpu())
        rows["mae_only"].append(rec_mae[0].cpu())
        rows["target"].append(target[0].cpu())
        rows["mse"].append(err.get("rec_mse", err["rec_mse_mae_only"]))
        rows["mse_mae_only"].append(err["rec_mse_mae_only"])
    return rows


def reconstruction_figure(rec: dict, samples=None):
    """Rows: masked input | X-Former reconstruction decoder(M') | frozen MAE decoder(M) | target, one column per
    sample, each reconstruction titled with its masked-patch MSE (per-patch normalised pixels)."""
    n = len(rec["target"])
    fig, axes = plt.subplots(4, n, figsize=(2.3 * n, 9.4), squeeze=False)
    names = [("masked", "masked input (grey = hidden)"), ("fused", "X-Former: decoder(M')"),
             ("mae_only", "frozen MAE: decoder(M)"), ("target", "target")]
    for j in range(n):
        for r, (key, label) in enumerate(names):
            ax = axes[r, j]
            ax.imshow(rec[key][j].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
            if key == "fused":
                ax.set_title(f"MSE {rec['mse'][j]:.3f}", fontsize=8)
            elif key == "mae_only":
                ax.set_title(f"MSE {rec['mse_mae_only'][j]:.3f}", fontsize=8)
            elif key == "masked":
                ax.set_title(f"#{samples[j].index}" if samples is not None else f"sample {j}", fontsize=9)
    fig.suptitle("masked-patch reconstruction (visible patches pasted back, as in MAE's figures)", fontsize=11)
    fig.tight_layout()
    return fig


# ---- where the queries look --------------------------------------------------------------------------------------
def cross_attention_weights(block, x: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """The softmax weights an ``xformer.Attention`` block computes (no mask): [B, heads, Lq, Lk], from its own
    q/k projections and the same scaling as ``scaled_dot_product_attention``."""
    B, Lq, D = x.shape
    h = block.heads
    q = block.q(x).view(B, Lq, h, D // h).transpose(1, 2)
    k = block.k(kv).view(B, kv.shape[1], h, D // h).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) / (D // h) ** 0.5, dim=-1)


@torch.no_grad()
def query_attention(model, pixel_values: torch.Tensor) -> dict:
    """Where the queries look, on the inference path (queries only, no text):

    ``cl`` [B, n_q, N_c]: the last Q-Former cross-attention layer over the image features C (mean of heads);
    ``mae`` [B, n_q, N_m] (dual_ca only, MAE stream unmasked): CA-2's attention over M' without its CLS token.
    Grids: ``cl_grid`` (the C encoder's) and ``mae_grid`` (the MIM encoder's).
    """
    qp = model.qformer.query
    last = str(qp.ca_layers[-1])
    seen = {}
    hooks = [qp.ca[last].register_forward_hook(lambda mod, args, out: seen.__setitem__("cl", args))]
    if model.fusion is not None:
        hooks.append(model.fusion.ca2.register_forward_hook(lambda mod, args, out: seen.__setitem__("mae", args)))
    try:
        with eval_mode(model):
            s = model.streams(pixel_values.to(model.device))
            model.qformer_pass(s["feats"], s["m"])
    finally:
        for hk in hooks:
            hk.remove()
    out = {"cl_grid": model.c_encoder.grid}
    w = cross_attention_weights(qp.ca[last], *seen["cl"][:2]).mean(1)  # [B, n_q, N_feats]
    n_c = s["c"].shape[1]
    out["cl"] = w[..., :n_c].float().cpu()  # fusion=concat: the C part of [LN(C); LN'(M)]
    if "mae" in seen and not model.knobs.mask_at_inference:
        wm = cross_attention_weights(model.fusion.ca2, *seen["mae"][:2]).mean(1)  # [B, n_q, 1 + N_m]
        out["mae"] = wm[..., 1:].float().cpu()
        out["mae_cls"] = wm[..., 0].float().cpu()
        out["mae_grid"] = model.mim.grid
    return out


def _overlay(sample, values: np.ndarray, grid: int, ax, vmax: float, title: str):
    from ..widgets import draw_scene

    draw_scene(sample, ax, labels=False, grid=False)
    size = sample.image.shape[0]
    ax.imshow(values.reshape(grid, grid), cmap="magma", alpha=0.6, vmin=0, vmax=vmax,
              extent=(-0.5, size - 0.5, size - 0.5, -0.5), interpolation="nearest")
    ax.set_title(title, fontsize=8)


def query_card(sample, qa: dict, b: int, max_queries: int = 8):
    """One sample: each query's attention over the CL patches (top row) and over the MAE patches (bottom row,
    with dual cross-attention). The static fallback of :func:`query_browser`."""
    n_q = min(qa["cl"].shape[1], max_queries)
    rows = 2 if "mae" in qa else 1
    fig, axes = plt.subplots(rows, n_q, figsize=(2.1 * n_q, 2.4 * rows + 0.5), squeeze=False)
    for r, key in enumerate(["cl", "mae"][:rows]):
        w = qa[key][b]
        g = qa[f"{key}_grid"]
        vmax = float(w[:n_q].max())
        for q in range(n_q):
            extra = f", CLS {float(qa['mae_cls'][b, q]):.2f}" if key == "mae" else ""
            target = "C" if key == "cl" else "M'"
            _overlay(sample, w[q].numpy(), g, axes[r, q], vmax, f"q{q} -> {target} {g}x{g}{extra}")
        axes[r, 0].set_ylabel("Q-Former CA -> C" if key == "cl" else "CA-2 -> M'", fontsize=9)
    fig.suptitle(f"where each query looks: {sample.split} #{sample.index}", fontsize=10)
    fig.tight_layout()
    return fig


def query_grid(samples, qa: dict, key: str = "cl"):
    """Several samples: the attention over the image of all queries together (mean over queries) and the query
    with the most peaked map (static multi-sample view)."""
    n = len(samples)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.6), squeeze=False)
    g = qa[f"{key}_grid"]
    for b, s in enumerate(samples):
        w = qa[key][b]  # [n_q, N]
        mean = w.mean(0).numpy()
        _overlay(s, mean, g, axes[0, b], float(mean.max()), f"#{s.index}: mean of queries")
        peak = int(w.max(1).values.argmax())
        _overlay(s, w[peak].numpy(), g, axes[1, b], float(w[peak].max()), f"most peaked: q{peak} (max {float(w[peak].max()):.2f})")
    what = "the CL patches C" if key == "cl" else "the MAE tokens M'"
    fig.suptitle(f"queries' attention over {what}", fontsize=11)
    fig.tight_layout()
    return fig


@interactive_view
def query_browser(model, world, split: str = "test", index: int = 0, max_index: int = 199):
    """Pick a sample: :func:`query_card` for it."""
    import ipywidgets as W

    index_w = W.IntSlider(value=index, min=0, max=max_index, description="sample", continuous_update=False)

    def figure():
        s = world.sample(split, index_w.value)
        return query_card(s, query_attention(model, world.images([s])), 0)

    return figure_panel([index_w], figure)


# ---- stage-1 objectives ------------------------------------------------------------------------------------------
def stage1_loss_table(record: dict) -> pd.DataFrame:
    """ITC / ITM / ITG / L_rec at the start and end of stage 1 (means of its first and last 10% of steps), from
    the run record (``diagnostics.stage1_losses``)."""
    d = record["diagnostics"].get("stage1_losses", {})
    rows = [{"loss": k, "first 10% of steps": v[0], "last 10% of steps": v[1], "change": v[1] - v[0]}
            for k, v in d.items()]
    return pd.DataFrame(rows).set_index("loss") if rows else pd.DataFrame()


def stage1_loss_figure(record: dict):
    """Bars of each stage-1 loss at the start and end of stage 1, beside the total stage-1 loss curve."""
    t = stage1_loss_table(record)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 3.8))
    if len(t):
        long = t[["first 10% of steps", "last 10% of steps"]].reset_index().melt(id_vars="loss", var_name="when",
                                                                               value_name="value")
        sns.barplot(data=long, x="loss", y="value", hue="when", ax=ax)
        ax.set_ylabel("loss")
        ax.set_title("stage-1 objectives (equal weights)")
    curve = record["losses"].get("stage1", [])
    bx.plot(range(len(curve)), curve, lw=1)
    bx.set_xlabel("stage-1 step")
    bx.set_ylabel("ITC + ITM + ITG (+ L_rec)")
    bx.set_title("total stage-1 loss")
    fig.tight_layout()
    return fig


@torch.no_grad()
def itc_matrix(model, caption_batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """ITC similarity of every image to every caption of a 'caption' batch ([B, B], max over queries / temperature)
    and the same-caption matrix (identical captions are positives)."""
    sim, same = model.itc_matrix(caption_batch)
    return sim.float().cpu(), same.cpu()


def itc_figure(sim: torch.Tensor, same: torch.Tensor, captions=None):
    """Heatmap of :func:`itc_matrix` with the positives framed and each image's best caption marked."""
    from matplotlib.patches import Rectangle

    n = sim.shape[0]
    fig, ax = plt.subplots(figsize=(0.45 * n + 3, 0.45 * n + 1.8))
    sns.heatmap(F.softmax(sim, dim=1).numpy(), ax=ax, cmap="mako", cbar_kws={"label": "softmax over captions"})
    for i in range(n):
        for j in range(n):
            if bool(same[i, j]):
                ax.add_patch(Rectangle((j, i), 1, 1, fill=False, ec="orange", lw=1.5))
        j = int(sim[i].argmax())
        ax.text(j + 0.5, i + 0.5, "x", ha="center", va="center", color="red", fontsize=9)
    if captions is not None:
        ax.set_xticks(np.arange(n) + 0.5, [c[:28] for c in captions], rotation=80, fontsize=7)
    ax.set_xlabel("caption")
    ax.set_ylabel("image")
    hits = float(same[torch.arange(n), sim.argmax(1)].float().mean())
    ax.set_title(f"ITC image->caption retrieval: {100 * hits:.0f}% hits (orange: true caption, x: best)", fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["walkthrough", "fusion_change", "without_fusion", "reconstructions", "reconstruction_figure",
           "cross_attention_weights", "query_attention", "query_card", "query_grid", "query_browser",
           "stage1_loss_table", "stage1_loss_figure", "itc_matrix", "itc_figure"]
