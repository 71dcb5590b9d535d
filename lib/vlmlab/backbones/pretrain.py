"""Tiny pretraining of the three backbones on the built-in world, the way real ones are pretrained:

- the language model on text only (scene text, then a question and its answer): it can answer about a scene
  it *reads*, which makes it the text-oracle ceiling;
- the CL ViT contrastively against coarse captions (CLIP), which do not mention texture by default;
- the MIM ViT as a masked autoencoder (MAE) on pixels, decoder kept. Its patches (8 px) are finer than the world's
  16-px cells: with one object per 16-px patch a masked patch could not be inferred from the visible ones (nothing
  in a neighbouring cell predicts what sits in this one), and MAE learnt nothing (loss stuck at the patch-mean
  baseline). With 8-px patches each object spans about 2x2 patches, so the visible part of an object predicts the
  hidden part: the same reason MAE works on natural images, where objects span many patches.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..budgets import Budget
from ..device import Compiled
from ..train import optimize
from ..world import World
from .vision import (MAEDecoder, TextTower, VisionEncoder, clip_loss, init_logit_scale, mae_target, make_vit,
                     masked_mse)

PRETRAIN_SEED = 1234  # the world seed backbone pretraining draws its training samples from


def make_lm(vocab_size: int, b: Budget, pad_id: int, bos_id: int, eos_id: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        vocab_size=vocab_size, hidden_size=b.lm_dim, intermediate_size=b.lm_ff, num_hidden_layers=b.lm_layers,
        num_attention_heads=b.lm_heads, num_key_value_heads=b.lm_heads, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=False, pad_token_id=pad_id, bos_token_id=bos_id,
        eos_token_id=eos_id, attn_implementation="sdpa")
    return LlamaForCausalLM(cfg)


def pretrain_lm(world: World, b: Budget, device, progress=True) -> tuple[LlamaForCausalLM, list[float]]:
    tok = world.tokenizer
    torch.manual_seed(PRETRAIN_SEED)
    lm = make_lm(len(tok), b, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id).to(device)
    answer_id = tok.convert_tokens_to_ids("answer")
    with training_forward(lm, b) as forward:

        def batches(step):
            return lm_batch(world, b, step)

        def loss(batch):
            return lm_loss(forward, batch, b, answer_id, device)

        losses = optimize(lm.parameters(), batches, loss, b.lm_steps, b.lm_lr, desc="pretrain LM (text only)",
                          device=device, progress=progress, weight_decay=0.01, precision=b.lm_precision)
    return lm.eval(), losses


def _sdpa_fp32(module, query, key, value, attention_mask, **kwargs):
    """transformers' SDPA attention computed in fp32 even under bf16 autocast: on CPU the bf16 backward of
    ``scaled_dot_product_attention`` took four times as long as the fp32 one (0.22 vs 0.05 s per LM step)."""
    with torch.autocast(query.device.type, enabled=False):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              **kwargs)
    return out.to(query.dtype), weights


AttentionInterface.register("vlmlab_sdpa_fp32", _sdpa_fp32)
# and SDPA's masks: without a registered mask function transformers passes no mask to a custom attention, so
# packed rows would attend across their sequences and padded rows to their padding
AttentionMaskInterface.register("vlmlab_sdpa_fp32", sdpa_mask)


@contextlib.contextmanager
def fp32_attention(lm: LlamaForCausalLM):
    """Attention in fp32 inside the block (the rest may run in bf16 autocast); plain SDPA again afterwards, so the
    saved config names only what transformers knows."""
    lm.set_attn_implementation("vlmlab_sdpa_fp32")
    try:
        yield lm
    finally:
        lm.set_attn_implementation("sdpa")


@contextlib.contextmanager
def training_forward(lm: LlamaForCausalLM, b: Budget):
    """The LM as its pretraining step calls it (``pretrain_lm`` and the benchmark): attention in fp32, so that bf16
    autocast (``b.lm_precision``) leaves it alone, and compiled when ``b.lm_compile`` (see :class:`Compiled`)."""
    with fp32_attention(lm):
        yield Compiled(lm, enabled=b.lm_compile, dynamic=True)


def lm_batch(world: World, b: Budget, step: int) -> dict:
    """The text LM's pretraining batch number ``step``: scene texts, each followed by several questions; packed
    several to a row when ``b.lm_pack`` (see :func:`pack_rows`)."""
    batch = world.batch("scene_lm", "train", step * b.lm_batch, b.lm_batch, with_images=False,
                        extra_questions=b.lm_extra_questions)
    return pack_rows(batch, b.lm_pack, world.tokenizer.pad_token_id) if b.lm_pack else batch


def pack_rows(batch: dict, length: int, pad_id: int) -> dict:
    """The same sequences laid out several to a row of ``length`` tokens (first-fit decreasing), not one per row
    padded to the batch's longest (a third of those tokens are padding).

    Each sequence restarts its ``position_ids`` at 0, which makes transformers build a block-causal mask: every
    token sees exactly the tokens it saw alone in its row, at the same RoPE positions. A sequence's first tokens
    carry no label (the prompt), so no loss crosses from one sequence into the next; the padding at a row's end
    forms a sequence of its own, unlabelled. Same tokens, same targets, same attention: the loss and gradients
    equal those of the padded batch up to float rounding (tested)."""
    ids, labels = batch["input_ids"], batch["labels"]
    lens = batch["attention_mask"].sum(1).tolist()
    if max(lens) > length:
        raise ValueError(f"length={length} is shorter than the longest sequence ({max(lens)} tokens)")
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lens)), key=lambda i: -lens[i]):
        j = next((j for j, f in enumerate(free) if lens[i] <= f), None)
        if j is None:
            rows.append([])
            free.append(length)
            j = len(rows) - 1
        rows[j].append(i)
        free[j] -= lens[i]
    out_ids = ids.new_full((len(rows), length), pad_id)
    out_labels = labels.new_full((len(rows), length), -100)
    positions = torch.zeros((len(rows), length), dtype=torch.long)
    for r, members in enumerate(rows):
        at = 0
        for i in members:
            n = lens[i]
            out_ids[r, at:at + n] = ids[i, :n]
            out_labels[r, at:at + n] = labels[i, :n]
            positions[r, at:at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(length - at)  # the padding: a sequence of its own
    return {"input_ids": out_ids, "labels": out_labels, "position_ids": positions, "real_tokens": sum(lens)}


def lm_loss(lm, batch: dict, b: Budget, answer_id: int, device) -> torch.Tensor:
    """Next-token loss over the whole sequence plus ``b.lm_answer_weight`` times the loss on the answer tokens
    (the token after ``answer_id`` and its colon). ``batch`` is padded (with an ``attention_mask``) or packed
    (with ``position_ids``, see :func:`pack_rows`)."""
    ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
    extra = {k: batch[k].to(device) for k in ("attention_mask", "position_ids") if k in batch}
    logits = lm(input_ids=ids, use_cache=False, **extra).logits[:, :-1].float()
    target = labels[:, 1:]
    ce = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100, reduction="none")
    ce = ce.view_as(target)
    valid = target != -100
    # answers are one token in ~20: weigh them up, they carry the reasoning the oracle needs
    is_answer = torch.zeros_like(valid)
    is_answer[:, 1:] = ids[:, 1:-1] == answer_id  # ids[t] == "answer", ids[t+1] == ":", target t+1 = answer
    is_answer = torch.roll(is_answer, 1, dims=1) & valid
    loss = ce[valid].mean()
    if is_answer.any():
        loss = loss + b.lm_answer_weight * ce[is_answer].mean()
    return loss


def new_vision_encoder(world: World, b: Budget, patch: int | None = None) -> VisionEncoder:
    """A ViT of the budget's shape; ``patch`` defaults to the CL encoder's (``b.vit_patch``)."""
    return VisionEncoder(make_vit(world.config.image_size, patch or b.vit_patch, b.vit_dim, b.vit_depth,
                                  b.vit_heads, b.vit_pos_embed))


def new_mae_decoder(b: Budget, n_patches: int) -> MAEDecoder:
    """The MAE decoder of the budget's shape for an encoder of ``n_patches`` patches of ``b.mim_patch`` px."""
    return MAEDecoder(b.vit_dim, b.mae_dec_dim, b.mae_dec_depth, max(1, b.mae_dec_dim // 32), n_patches,
                      b.mim_patch ** 2 * 3, b.vit_pos_embed)


def pretrain_cl(world: World, b: Budget, device, progress=True) -> tuple[VisionEncoder, list[float]]:
    """CLIP: image embedding vs caption embedding, symmetric InfoNCE, in-batch negatives."""
    torch.manual_seed(PRETRAIN_SEED + 1)
    enc = new_vision_encoder(world, b).to(device)
    text = TextTower(len(world.tokenizer), b.clip_text_dim, b.clip_embed_dim).to(device)
    proj = torch.nn.Linear(b.vit_dim, b.clip_embed_dim, bias=False).to(device)
    scale = init_logit_scale()
    tok = world.tokenizer

    def batches(step):  # images and their tokenized captions
        samples = world.samples("train", step * b.cl_batch, b.cl_batch)
        caps = tok([world.caption(s) for s in samples], padding=True, return_tensors="pt")
        return world.images(samples), caps["input_ids"], caps["attention_mask"]

    def loss(batch):
        images, ids, mask = (t.to(device) for t in batch)
        return clip_loss(proj(enc.pooled(images)), text(ids, mask), scale.to(device))

    params = list(enc.parameters()) + list(text.parameters()) + list(proj.parameters()) + [scale]
    losses = optimize(params, batches, loss, b.cl_steps, b.cl_lr, desc="pretrain CL ViT (captions)", device=device,
                      progress=progress, weight_decay=0.05)
    return enc.eval(), losses


def pretrain_mim(world: World, b: Budget, device, progress=True) -> tuple[VisionEncoder, MAEDecoder, list[float]]:
    """MAE: reconstruct the pixels of masked patches from the visible ones. The encoder sees the noisy image;
    the target is the render before its noise (``b.mim_target="clean"``), so the loss is spent on the objects'
    detail, not on unpredictable pixel noise."""
    torch.manual_seed(PRETRAIN_SEED + 2)
    enc = new_vision_encoder(world, b, b.mim_patch).to(device)
    n_patches = enc.grid ** 2  # 64 with 8-px patches on 64-px images: an object covers about 2x2 of them
    dec = new_mae_decoder(b, n_patches).to(device)
    gen = torch.Generator(device=device).manual_seed(PRETRAIN_SEED)

    clean = b.mim_target == "clean"

    def batches(step):
        samples = world.samples("train", step * b.mim_batch, b.mim_batch, clean=clean)
        images = world.images(samples)
        return images, (world.images(samples, clean=True) if clean else images)

    def loss(batch):
        pixels, target = (t.to(device) for t in batch)
        tokens, ids_restore, mask = enc.encode_masked(pixels, b.mim_mask_ratio, generator=gen)
        pred = dec(tokens, ids_restore)
        return masked_mse(pred, mae_target(enc.prepare(target), b.mim_patch, b.mae_norm_pix), mask)

    params = list(enc.parameters()) + list(dec.parameters())
    losses = optimize(params, batches, loss, b.mim_steps, b.mim_lr, desc="pretrain MIM ViT (MAE)", device=device,
                      progress=progress, weight_decay=0.05)
    return enc.eval(), dec.eval(), losses


def mim_reference_loss(world: World, encoder: VisionEncoder, n: int = 1000, clean: bool = True,
                       norm_pix: bool = True) -> float:
    """The MIM loss of a model that learnt only the average target: predict every masked patch by its mean over
    ``n`` training images, in the space the MAE target lives in (the encoder's normalised pixels, per-patch
    normalised when ``norm_pix``, as ``Budget.mae_norm_pix``; ``clean``: the renders before their noise, as
    ``Budget.mim_target="clean"``). Masks are drawn independently of the content, so this is the expected
    masked-patch MSE of that guess. MIM pretraining has learnt something about *objects* only when its loss ends
    below this."""
    with torch.no_grad():
        x = encoder.prepare(world.images(world.samples("train", 0, n, clean=clean), clean=clean))  # [n, 3, H, W]
        t = mae_target(x, encoder.patch, norm_pix)  # [n, N, p*p*3]
        return float(((t - t.mean(0, keepdim=True)) ** 2).mean())
