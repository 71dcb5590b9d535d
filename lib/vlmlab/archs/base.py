"""The base VLM interface every architecture implements, and the knob machinery.

A VLM owns a (fine-tunable) copy of the pretrained LLM. Subclasses say how an image becomes visual tokens
(``visual_tokens``) and which stages train what (``stages``); the base class splices the visual tokens into
the text at the ``<img>`` placeholder, runs the LLM (causal, or bidirectional within each image span), and
computes the next-token loss, the answer logits the evaluator scores, and the answer-to-image attention
diagnostic every architecture reports.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import ATTENTION_TYPES, additive_mask, allowed_mask, image_span_ids
from ..checks import article
from ..train import Stage
from ..world import IMG


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """Run a block with ``module`` in eval mode (dropout off, masks as at inference), then restore its mode."""
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


def frozen_copy(module: nn.Module | None) -> nn.Module | None:
    """A private, frozen copy of a shared pretrained backbone (runs never modify the cached backbones)."""
    return None if module is None else copy.deepcopy(module).requires_grad_(False)


def knob(default, *, choices=None, check=None, doc: str = ""):
    """A knob field: ``choices`` (allowed values) or ``check`` (predicate, description) are validated."""
    return field(default=default, metadata={"choices": choices, "check": check, "doc": doc})


def steps_knob(stage: str, example: str):
    """A stage's step count outside the VLM budget (0: the stage keeps its share of the budget's steps)."""
    return knob(0, check=(lambda v: 0 <= v <= 100_000, "between 0 and 100000"),
                doc=f"steps of {stage} outside the VLM budget ({example}); 0 = its share of the budget")


def batch_knob(stage: str, example: str):
    """A stage's samples per step (0: the budget's VLM batch)."""
    return knob(0, check=(lambda v: 0 <= v <= 4096, "between 0 and 4096"),
                doc=f"samples per {stage} step ({example}); 0 = the budget's VLM batch")


@dataclass
class Knobs:
    """Base class of an architecture's knobs (a dataclass; each field made with :func:`knob`)."""

    @classmethod
    def describe(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}

    @classmethod
    def build(cls, arch: str, values: dict[str, Any] | None) -> "Knobs":
        values = dict(values or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            raise ValueError(f"knobs={unknown} do not apply to arch={arch!r}; its knobs are: {names or 'none'}")
        for f in dataclasses.fields(cls):
            if f.name not in values:
                continue
            v, default = values[f.name], f.default
            want = type(default)
            ok = isinstance(v, want) and not (want is int and isinstance(v, bool))
            if want is float and isinstance(v, int) and not isinstance(v, bool):
                v = values[f.name] = float(v)
                ok = True
            if not ok:
                raise TypeError(f"knob {f.name!r} of arch={arch!r} must be {article(want.__name__)}, got {v!r} "
                                f"({type(v).__name__})")
            choices = f.metadata.get("choices")
            if choices is not None and v not in choices:
                raise ValueError(f"knob {f.name!r} of arch={arch!r} got {v!r}; allowed values: {list(choices)}")
            check = f.metadata.get("check")
            if check is not None and not check[0](v):
                raise ValueError(f"knob {f.name!r} of arch={arch!r} got {v!r}; it must be {check[1]}")
        obj = cls(**values)
        obj.validate(arch)
        return obj

    def validate(self, arch: str) -> None:
        """Cross-knob checks (impossible combinations); raise ValueError naming the knobs."""


def splice(text: torch.Tensor, ids: torch.Tensor, image_token_id: int, visual: torch.Tensor, fill=None):
    """Replace the single ``<img>`` placeholder of each row by that row's n visual items.

    text [B, L, ...] (embeddings, labels or masks of the text), visual [B, n, ...] -> [B, L - 1 + n, ...].
    """
    B, L = ids.shape
    n = visual.shape[1]
    p = (ids == image_token_id).float().argmax(dim=1)  # [B] placeholder position
    j = torch.arange(L, device=ids.device)
    dest = torch.where(j[None] < p[:, None], j[None], j[None] + n - 1)  # [B, L]; the placeholder lands on p+n-1
    shape = (B, L - 1 + n) + tuple(text.shape[2:])
    out = torch.zeros(shape, dtype=text.dtype, device=text.device)
    expand = lambda t: t.view(t.shape[:2] + (1,) * (text.dim() - 2)).expand(t.shape[:2] + tuple(text.shape[2:]))  # noqa: E731
    out = out.scatter(1, expand(dest), text)
    vdest = p[:, None] + torch.arange(n, device=ids.device)[None]  # [B, n]
    return out.scatter(1, expand(vdest), visual.to(text.dtype))


class VLM(nn.Module):
    """Base class: subclasses set ``arch``, ``KnobsClass`` and implement ``visual_tokens`` and ``stages``."""

    arch: ClassVar[str] = "base"
    KnobsClass: ClassVar[type[Knobs]] = Knobs
    eval_task: ClassVar[str] = "qa"  # which prompt format the evaluator feeds (see vlmlab.world.TASKS)
    uses_images: ClassVar[bool] = True

    @classmethod
    def backbones_needed(cls, knobs: Knobs) -> tuple[str, ...]:
        """Which pretrained backbones (of ``vlmlab.backbones.KINDS``) a model with these knobs reads: only those
        are built and loaded for a run, so a first LLaVA run does not wait for an MIM encoder it never uses."""
        return ("lm", "cl")

    def __init__(self, backbones, knobs: Knobs, budget):
        super().__init__()
        self.knobs = knobs
        self.budget = budget
        self.tokenizer = backbones.tokenizer
        self.lm = frozen_copy(backbones.lm)
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(IMG)
        self.d_lm = self.lm.config.hidden_size
        self.attention = getattr(knobs, "attention", "causal")

    # ---- to implement ----------------------------------------------------------------------------------
    def visual_tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """[B,3,H,W] -> ([B, n_visual, d_lm], extras for losses/diagnostics)."""
        raise NotImplementedError

    def stages(self) -> list[Stage]:
        raise NotImplementedError

    # ---- shared machinery ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def text_embeds(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm.get_input_embeddings()(input_ids)

    def build_inputs(self, batch: dict) -> dict:
        """Embed text, splice visual tokens at ``<img>``; labels are -100 at visual positions."""
        dev = self.device
        ids = batch["input_ids"].to(dev)
        emb = self.text_embeds(ids)  # [B, L, d]
        out = {"attention_mask": batch["attention_mask"].to(dev), "labels": batch["labels"].to(dev),
               "answer_pos": batch["answer_pos"].to(dev), "extras": {}}
        if not self.uses_images or "pixel_values" not in batch:
            out.update(inputs_embeds=emb, visual_mask=torch.zeros_like(ids, dtype=torch.bool), input_ids=ids)
            return out
        vis, extras = self.visual_tokens(batch["pixel_values"].to(dev))  # [B, n, d]
        n = vis.shape[1]
        out["extras"] = extras
        out["inputs_embeds"] = splice(emb, ids, self.image_token_id, vis)
        out["attention_mask"] = splice(out["attention_mask"], ids, self.image_token_id,
                                       torch.ones(vis.shape[:2], dtype=torch.long, device=dev))
        out["labels"] = splice(out["labels"], ids, self.image_token_id,
                               torch.full(vis.shape[:2], -100, dtype=torch.long, device=dev))
        out["visual_mask"] = splice(torch.zeros_like(ids, dtype=torch.bool), ids, self.image_token_id,
                                    torch.ones(vis.shape[:2], dtype=torch.bool, device=dev))
        out["answer_pos"] = out["answer_pos"] + n - 1
        out["input_ids"] = splice(ids, ids, self.image_token_id,
                                  torch.full(vis.shape[:2], self.image_token_id, dtype=torch.long, device=dev))
        return out

    def lm_attention_mask(self, inputs: dict, dtype: torch.dtype):
        """2-D padding mask for causal attention, or a 4-D additive mask with bidirectional image spans."""
        if self.attention == "causal":
            return inputs["attention_mask"]
        allowed = allowed_mask(inputs["attention_mask"], image_span_ids(inputs["visual_mask"]), bidirectional=True)
        return additive_mask(allowed, dtype)

    def run_lm(self, inputs: dict, output_attentions: bool = False):
        emb = inputs["inputs_embeds"]
        return self.lm(inputs_embeds=emb, attention_mask=self.lm_attention_mask(inputs, emb.dtype),
                       output_attentions=output_attentions, use_cache=False)

    def forward(self, batch: dict, output_attentions: bool = False) -> dict:
        inputs = self.build_inputs(batch)
        out = self.run_lm(inputs, output_attentions)
        inputs["logits"] = out.logits  # [B, L', V]
        inputs["attentions"] = out.attentions if output_attentions else None
        return inputs

    @staticmethod
    def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)

    def loss_lm(self, batch: dict) -> torch.Tensor:
        out = self.forward(batch)
        return self.next_token_loss(out["logits"], out["labels"])

    @torch.no_grad()
    def answer_logits(self, batch: dict) -> torch.Tensor:
        """Logits predicting the first answer token: [B, V]."""
        out = self.forward(batch)
        rows = torch.arange(out["logits"].shape[0], device=out["logits"].device)
        return out["logits"][rows, out["answer_pos"] - 1].float()

    @torch.no_grad()
    def forward_with_attentions(self, batch: dict) -> dict:
        """``forward`` through the LLM's eager attention path (for this pass only), so that attention weights
        come back in ``out["attentions"]`` (one [B, heads, L, L] per layer)."""
        impl = self.lm.config._attn_implementation
        self.lm.set_attn_implementation("eager")
        try:
            return self.forward(batch, output_attentions=True)
        finally:
            self.lm.set_attn_implementation(impl)

    @torch.no_grad()
    def answer_attention(self, batch: dict) -> torch.Tensor:
        """Attention from the position that predicts the answer to each visual token, averaged over layers and
        heads: [B, n_visual]."""
        out = self.forward_with_attentions(batch)
        att = torch.stack(out["attentions"]).mean(dim=(0, 2))  # [B, L, L]
        rows = torch.arange(att.shape[0], device=att.device)
        from_answer = att[rows, out["answer_pos"] - 1]  # [B, L]
        vm = out["visual_mask"]
        return torch.stack([from_answer[b][vm[b]] for b in range(att.shape[0])])

    @torch.no_grad()
    def diagnostics(self, batch: dict) -> dict:
        """JSON-able per-architecture diagnostics on one evaluation batch (subclasses add theirs)."""
        if not self.uses_images:
            return {}
        att = self.answer_attention(batch)  # [B, n]
        return {"answer_to_image_attention_mass": float(att.sum(1).mean()),
                "answer_to_image_attention_map": att.mean(0).tolist()}

    def param_counts(self) -> dict:
        total = sum(p.numel() for p in self.parameters())
        trainable = set()
        for st in self.stages():
            for name in st.trainable:
                trainable |= {id(p) for p in self.get_submodule(name).parameters()}
        n_train = sum(p.numel() for p in self.parameters() if id(p) in trainable)
        return {"total": total, "trainable": n_train}

