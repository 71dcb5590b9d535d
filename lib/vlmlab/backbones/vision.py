"""Vision encoders: a timm ViT behind a small wrapper, the CLIP-style text tower and the MAE decoder.

``VisionEncoder`` normalises pixels, resizes to the ViT's input size and returns the raw output of any set of
blocks (CLS dropped), which is what every architecture reads: LLaVA the penultimate block, Ovis the last block
before the final norm, LLaViT several blocks concatenated on channels, X-Former the MAE encoder's tokens.
"""
from __future__ import annotations

import math

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn


POS_EMBEDS = ("sincos", "learned")


def sincos_2d(grid: int, dim: int, n_prefix: int = 1) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings (MAE, MoCo v3): [1, n_prefix + grid**2, dim], prefix rows zero.

    Half of the channels encode the row, half the column, each as sin and cos of the index at dim/4 frequencies.
    Every token gets a vector of norm sqrt(dim/2), comparable to a patch embedding, so the position survives
    into the features whether or not the pretraining objective needs it (captions here never name positions).
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embeddings need a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # [dim/4]
    idx = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(idx, idx, indexing="ij")  # [grid, grid]: raster order, as the patch tokens

    def enc(pos):  # [grid*grid] -> [grid*grid, dim/2]
        a = pos.flatten()[:, None] * omega[None]
        return torch.cat([a.sin(), a.cos()], dim=1)

    body = torch.cat([enc(rows), enc(cols)], dim=1)  # [grid*grid, dim]
    return torch.cat([torch.zeros(n_prefix, dim, dtype=torch.float64), body]).float()[None]


def _position_embeddings(owner: nn.Module, name: str, kind: str, grid: int, n_prefix: int) -> None:
    """Keep the parameter ``owner.<name>`` learned, or replace it with fixed 2-D sin-cos codes (``kind="sincos"``).

    The fixed table is a persistent buffer under the same name, not a frozen parameter: it stays in the state dict
    (checkpoints keep their keys and load either way), but ``requires_grad_(True)`` on a module, which is how a
    stage unfreezes a whole vision tower (``vlmlab.train.set_trainable``), cannot make it train."""
    if kind not in POS_EMBEDS:
        raise ValueError(f"pos_embed={kind!r}; allowed values: {POS_EMBEDS}")
    if kind == "sincos":
        dim = getattr(owner, name).shape[-1]
        delattr(owner, name)
        owner.register_buffer(name, sincos_2d(grid, dim, n_prefix))


def make_vit(image_size: int, patch: int, dim: int, depth: int, heads: int, pos_embed: str = "learned") -> nn.Module:
    """A timm ViT; ``pos_embed="sincos"`` replaces its learned position embeddings by fixed 2-D sin-cos ones (a
    buffer, see :func:`_position_embeddings`)."""
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=image_size, patch_size=patch, embed_dim=dim,
        depth=depth, num_heads=heads, num_classes=0, global_pool="avg", class_token=True)
    _position_embeddings(vit, "pos_embed", pos_embed, vit.patch_embed.grid_size[0], vit.num_prefix_tokens)
    return vit


class VisionEncoder(nn.Module):
    """A timm ViT plus its pixel normalisation. ``layers`` index blocks like Python (-1 = last, -2 = penultimate)."""

    def __init__(self, vit: nn.Module, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), interpolation: str = "bilinear"):
        super().__init__()
        self.vit = vit
        self.interpolation = interpolation  # how images are resized to the ViT's input (a real ViT's data config)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def dim(self) -> int:
        return self.vit.embed_dim

    @property
    def depth(self) -> int:
        return len(self.vit.blocks)

    @property
    def img_size(self) -> int:
        return self.vit.patch_embed.img_size[0]

    @property
    def patch(self) -> int:
        return self.vit.patch_embed.patch_size[0]

    @property
    def grid(self) -> int:
        return self.vit.patch_embed.grid_size[0]

    @property
    def n_prefix(self) -> int:
        return self.vit.num_prefix_tokens

    def prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [0,1] -> normalised, resized to the ViT's input size."""
        if pixels.shape[-1] != self.img_size:
            pixels = F.interpolate(pixels, size=(self.img_size, self.img_size), mode=self.interpolation,
                                   align_corners=False).clamp(0, 1)
        return (pixels - self.mean) / self.std

    def embed_patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """Patch embeddings with position embeddings, no prefix tokens: [B, N, d]."""
        x = self.vit.patch_embed(self.prepare(pixels))  # [B, N, d]
        return x + self.vit.pos_embed[:, self.n_prefix:]

    def with_prefix(self, x: torch.Tensor) -> torch.Tensor:
        """Prepend the CLS token (with its position embedding): [B, N, d] -> [B, 1+N, d]."""
        if self.n_prefix == 0:
            return x
        cls = (self.vit.cls_token + self.vit.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, x], dim=1)

    def blocks_from(self, x: torch.Tensor, layers) -> list[torch.Tensor]:
        """Run the blocks on prefixed tokens; return the requested blocks' raw outputs without prefix tokens."""
        want = sorted({l % self.depth for l in layers})
        outs = {}
        x = self.vit.norm_pre(x)
        for i, blk in enumerate(self.vit.blocks[: want[-1] + 1]):
            x = blk(x)
            if i in want:
                outs[i] = x[:, self.n_prefix:]
        return [outs[l % self.depth] for l in layers]

    def forward(self, pixels: torch.Tensor, layers=(-2,)) -> list[torch.Tensor]:
        """Raw outputs of the given blocks, each [B, N, d]."""
        return self.blocks_from(self.with_prefix(self.embed_patches(pixels)), layers)

    def pooled(self, pixels: torch.Tensor) -> torch.Tensor:
        """The global image embedding used by contrastive pretraining: final norm, mean over patches: [B, d]."""
        x = self.blocks_from(self.with_prefix(self.embed_patches(pixels)), [-1])[0]
        return self.vit.norm(x).mean(dim=1)

    def encode_masked(self, pixels: torch.Tensor, mask_ratio: float, generator=None):
        """MAE encoder pass: keep a random (1-ratio) subset of patches per sample.

        Returns tokens [B, 1+N_keep, d] (CLS included, final norm applied), ids_restore [B, N], mask [B, N]
        (1 = masked).
        """
        x = self.embed_patches(pixels)  # [B, N, d]
        B, N, d = x.shape
        keep = max(1, int(round(N * (1 - mask_ratio))))
        noise = torch.rand(B, N, device=x.device, generator=generator)
        ids_shuffle = noise.argsort(dim=1)
        ids_restore = ids_shuffle.argsort(dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, d))  # [B, keep, d]
        mask = torch.ones(B, N, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        x = self.vit.norm_pre(self.with_prefix(x))
        for blk in self.vit.blocks:
            x = blk(x)
        return self.vit.norm(x), ids_restore, mask


class MAEDecoder(nn.Module):
    """The MAE decoder: visible tokens + mask tokens, back in image order, predict every patch's pixels."""

    def __init__(self, enc_dim: int, dim: int, depth: int, heads: int, n_patches: int, patch_pixels: int,
                 pos_embed: str = "learned"):
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 1 + n_patches, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio=4.0, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, patch_pixels)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        # MAE's decoder: fixed 2-D sin-cos, so each mask token knows which patch it stands for
        _position_embeddings(self, "pos", pos_embed, math.isqrt(n_patches), n_prefix=1)

    def forward(self, tokens: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """tokens [B, 1+keep, enc_dim] -> pixel predictions [B, N, patch_pixels]."""
        x = self.embed(tokens)  # [B, 1+keep, dim]
        B, N = ids_restore.shape
        fill = self.mask_token.expand(B, N + 1 - x.shape[1], -1)
        body = torch.cat([x[:, 1:], fill], dim=1)  # [B, N, dim], shuffled order
        body = torch.gather(body, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], body], dim=1) + self.pos  # [B, 1+N, dim]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))[:, 1:]


def patchify(pixels: torch.Tensor, patch: int) -> torch.Tensor:
    """[B,3,H,W] -> [B, N, patch*patch*3] in raster order."""
    B, C, H, W = pixels.shape
    g = H // patch
    x = pixels.reshape(B, C, g, patch, g, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(B, g * g, patch * patch * C)


def mae_target(pixels: torch.Tensor, patch: int, norm_pix: bool = True) -> torch.Tensor:
    """MAE's pixel target [B, N, p*p*3]: per-patch normalised (its norm_pix_loss) or the pixels as given."""
    t = patchify(pixels, patch)
    if not norm_pix:
        return t
    mean, var = t.mean(dim=-1, keepdim=True), t.var(dim=-1, keepdim=True)
    return (t - mean) / (var + 1e-6).sqrt()


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MSE averaged over masked patches only (mask 1 = masked)."""
    per_patch = ((pred - target) ** 2).mean(dim=-1)  # [B, N]
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)


class TextTower(nn.Module):
    """CLIP's text side, tiny: token embeddings + 2 transformer layers, mean over valid tokens."""

    def __init__(self, vocab: int, dim: int, out_dim: int, max_len: int = 64):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        layer = nn.TransformerEncoderLayer(dim, 4 if dim % 4 == 0 else 1, 4 * dim, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.proj = nn.Linear(dim, out_dim, bias=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids) + self.pos[:, : ids.shape[1]]
        x = self.enc(x, src_key_padding_mask=mask == 0)
        m = mask.unsqueeze(-1).float()
        return self.proj((x * m).sum(1) / m.sum(1).clamp(min=1))


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with in-batch negatives."""
    img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = logit_scale.exp().clamp(max=100) * img @ txt.t()
    labels = torch.arange(len(img), device=img.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))


def init_logit_scale() -> nn.Parameter:
    return nn.Parameter(torch.tensor(math.log(1 / 0.07)))
