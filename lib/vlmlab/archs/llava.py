"""LLaVA (Liu et al., 2023; LLaVA-1.5, Liu et al., 2024): the baseline every seed design is measured against.

A frozen CLIP-style ViT encodes the image; the output of its penultimate block (CLS dropped) goes through a
small MLP connector (``mlp2x_gelu``) into the LLM's input space, and the resulting continuous visual tokens
replace the ``<img>`` placeholder in the prompt. Training has two stages: (1) alignment, only the connector
learns, on description data (here: the image must be continued by its full scene text, as LLaVA's
pre-training continues an image with its caption); (2) instruction tuning, connector and LLM learn on VQA.

Knobs: which encoder (CL, or the MIM encoder for the CL-vs-MIM ablation), the ViT block read, the connector
depth, the attention type over visual tokens (causal as in LLaVA, or bidirectional within the image: the
control for LLaViT), and ``cell_words``, a diagnostic that follows each visual token by the LLM's own embeddings
of its cell's words ("r1 c2", as the scene text writes them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attention import ATTENTION_TYPES
from ..train import Stage
from .base import VLM, Knobs, knob, frozen_copy


def mlp_connector(d_in: int, d_out: int, depth: int) -> nn.Sequential:
    """depth 1: Linear; depth k: Linear, (GELU, Linear) x (k-1) -- LLaVA-1.5's ``mlp{k}x_gelu``."""
    layers: list[nn.Module] = [nn.Linear(d_in, d_out)]
    for _ in range(depth - 1):
        layers += [nn.GELU(), nn.Linear(d_out, d_out)]
    return nn.Sequential(*layers)


@dataclass
class LlavaKnobs(Knobs):
    encoder: str = knob("cl", choices=("cl", "mim"), doc="pretrained ViT feeding the connector: CL (CLIP) or MIM (MAE)")
    feature_layer: int = knob(-2, doc="ViT block read (Python index; -2 = penultimate, as LLaVA-1.5)")
    connector_depth: int = knob(2, check=(lambda v: 1 <= v <= 4, "between 1 and 4"),
                                doc="connector MLP depth: 1 = linear, 2 = mlp2x_gelu (LLaVA-1.5)")
    attention: str = knob("causal", choices=ATTENTION_TYPES,
                          doc="LLM attention among an image's tokens: causal (LLaVA) or bidirectional (LLaViT's)")
    cell_words: bool = knob(False, doc="diagnostic: each visual token followed by the LLM's embeddings of its cell "
                                       "words (r<row> c<col>): the image tokens then say where they are in words")


class Llava(VLM):
    arch = "llava"
    KnobsClass = LlavaKnobs

    @classmethod
    def backbones_needed(cls, knobs: LlavaKnobs):
        return ("lm", knobs.encoder)

    def __init__(self, backbones, knobs: LlavaKnobs, budget):
        super().__init__(backbones, knobs, budget)
        self.vision = frozen_copy(backbones.cl if knobs.encoder == "cl" else backbones.mim)
        if not -self.vision.depth <= knobs.feature_layer < self.vision.depth:
            raise ValueError(f"knob 'feature_layer' of arch='llava' got {knobs.feature_layer}; the ViT has "
                             f"{self.vision.depth} blocks: allowed values {-self.vision.depth}..{self.vision.depth - 1}")
        self.connector = mlp_connector(self.vision.dim, self.d_lm, knobs.connector_depth)
        if knobs.cell_words:  # each patch's cell-word ids, once: [N, 2]
            self.register_buffer("cell_ids", self.cell_word_ids(self.vision.grid ** 2), persistent=False)

    def features(self, pixel_values):
        return self.vision(pixel_values, layers=[self.knobs.feature_layer])[0]  # [B, N, d_vit]

    def visual_tokens(self, pixel_values):
        vis = self.connector(self.features(pixel_values))  # [B, N, d_lm]
        if self.knobs.cell_words:
            vis = self.with_cell_words(vis)  # [B, 3N, d_lm]
        return vis, {}

    def cell_word_ids(self, n_patches: int) -> torch.Tensor:
        """The token ids of each patch's cell words: [N, 2] (its row word, its column word). The ViT's patch grid
        may be finer than the world's cell grid (the MIM encoder's 8 x 8 on 4 x 4 cells)."""
        vocab = self.tokenizer.get_vocab()
        cells = sum(1 for i in range(64) if f"r{i}" in vocab)  # the world's grid side
        g = int(round(n_patches ** 0.5))
        if cells == 0 or g % cells:
            raise ValueError(f"knob 'cell_words' needs the world's r<i>/c<j> words and a patch grid ({g}) that is "
                             f"a multiple of the cell grid ({cells})")
        k = g // cells
        ids = [[vocab[f"r{(i // g) // k}"], vocab[f"c{(i % g) // k}"]] for i in range(n_patches)]
        return torch.tensor(ids)

    def with_cell_words(self, vis: torch.Tensor) -> torch.Tensor:
        """[B, N, d] -> [B, 3N, d]: token, row word, column word, for each patch in raster order."""
        B, N, d = vis.shape
        words = self.text_embeds(self.cell_ids)  # [N, 2, d]
        return torch.cat([vis[:, :, None], words[None].expand(B, -1, -1, -1).to(vis.dtype)], 2).reshape(B, 3 * N, d)

    def stages(self):
        b = self.budget
        return [
            Stage("align", ("connector",), task="describe", share=0.3),
            Stage("instruct", ("connector", "lm"), task="qa", share=0.7, lr={"lm": b.llm_lr}),
        ]
