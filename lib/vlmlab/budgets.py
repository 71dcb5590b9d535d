"""Budgets: the single size knob. Every model width, step count, batch size and evaluation size comes from here.

``smoke``   seconds: tests and notebook smoke runs (tiny widths, a handful of steps; numbers are meaningless)
``default`` minutes on a 2-core CPU: the README's main command, the course, the measured tables
``full``    GPU scale: wider backbones, longer schedules
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Budget:
    name: str
    # vision transformers (the CL and MIM encoders share width and depth; MIM has a finer patch)
    vit_patch: int = 16  # the CL encoder's patch: one token per 16-px cell of the world
    mim_patch: int = 8  # the MIM encoder's patch: smaller than a cell, so a masked patch's object is visible nearby
    vit_dim: int = 128
    vit_depth: int = 4
    vit_heads: int = 4
    # position embeddings of both ViTs and the MAE decoder: fixed 2-D sin-cos (MAE) or learned (CLIP), sin-cos
    # because learned ones never leave their init when captions name no position (docs/lab-notes/spatial-plateau.md)
    vit_pos_embed: str = "sincos"
    mae_dec_dim: int = 64
    mae_dec_depth: int = 2
    # MAE target: pixels normalised per patch (MAE's norm_pix_loss), on the clean render (``mim_target``), where a
    # flat patch becomes zero and only contrast inside a patch is left to predict (docs/lab-notes/mim-v2.md)
    mae_norm_pix: bool = True
    clip_text_dim: int = 64
    clip_embed_dim: int = 64
    # language model (Llama-style, via transformers)
    lm_dim: int = 128
    lm_layers: int = 4
    lm_heads: int = 4
    lm_ff: int = 384
    # backbone pretraining
    lm_steps: int = 6000
    lm_batch: int = 64
    lm_lr: float = 2e-3
    lm_extra_questions: int = 8  # further questions per pretraining scene (denser answer supervision)
    lm_answer_weight: float = 2.0  # extra weight of the answer tokens in the LM pretraining loss
    # how the LM pretraining step runs, on the same data and loss: sequences packed several to a row of lm_pack
    # tokens (0: one per row, padded) and torch.compile (eager when no compiler is found); fp32, because the VLMs
    # do worse on a bf16-trained LM (docs/lab-notes/lm-step-speed.md)
    lm_pack: int = 320
    lm_precision: str = "fp32"
    lm_compile: bool = True
    cl_steps: int = 800
    cl_batch: int = 128
    cl_lr: float = 1e-3
    # texture shows with length: at 800 steps the MAE loss sat at the trivial solution, at 3,200 the tokens
    # read texture ([mim-v2](../../docs/lab-notes/mim-v2.md))
    mim_steps: int = 3200
    mim_batch: int = 128
    mim_lr: float = 1.5e-3
    mim_mask_ratio: float = 0.5  # MAE's 0.75 hides a third of the 4-patch objects entirely, 0.5 about 6 %
    mim_target: str = "clean"  # MAE target: the render before its pixel noise ("clean") or the input itself ("noisy")
    # VLM training: total optimizer steps, split across an architecture's stages by their declared shares; many
    # small steps, because the VLMs are short of optimizer steps, not of samples (docs/lab-notes/vlm-steps.md)
    vlm_steps: int = 2400
    vlm_batch: int = 16
    vlm_lr: float = 1e-3
    llm_lr: float = 3e-4  # learning rate of LLM parameters when a stage unfreezes them
    # the VLM stages' loss and its backward under torch.compile (eager without a C compiler or with
    # VLMLAB_COMPILE=0): the same maths up to fp32 rounding, faster after a first compile (benchmarks/compile_ab.py)
    vlm_compile: bool = True
    vlm_schedule: str = "cosine"  # the VLM stages' learning rate after warm-up: cosine decay or held ("constant")
    # share of the VLMs' training questions replaced by a single-object look-up ("what column is the circle in ?")
    vlm_grounding: float = 0.0
    # evaluation: questions per category and split, enough that one seed's sampling spread stays below the
    # margins the tables are read for (docs/lab-notes/evaluation-size.md)
    eval_per_category: int = 500
    eval_batch: int = 256
    # linear probes of the ViTs (vlmlab.probes, notebook 02): training scenes (the probes' test set is half as many)
    probe_scenes: int = 2000

    def as_dict(self) -> dict:
        return asdict(self)

    def pretrain_dict(self) -> dict:
        """The fields that define the pretrained backbones (their cache key)."""
        keys = [k for k in asdict(self) if k.startswith(("vit_", "mae_", "clip_", "lm_", "cl_", "mim_"))]
        return {k: getattr(self, k) for k in keys}


DEFAULT = Budget("default")
BUDGETS: dict[str, Budget] = {
    "smoke": Budget(
        "smoke", vit_dim=32, vit_depth=2, vit_heads=2, mae_dec_dim=32, mae_dec_depth=1, clip_text_dim=32,
        clip_embed_dim=32, lm_dim=32, lm_layers=2, lm_heads=2, lm_ff=64, lm_steps=15, lm_batch=16, lm_compile=False,
        vlm_compile=False, cl_steps=10, cl_batch=16, mim_steps=10, mim_batch=16, vlm_steps=12, vlm_batch=8,
        eval_per_category=8, eval_batch=64, probe_scenes=160),
    "default": DEFAULT,
    "full": replace(
        DEFAULT, name="full", vit_dim=384, vit_depth=8, vit_heads=6, mae_dec_dim=192, mae_dec_depth=4,
        clip_text_dim=256, clip_embed_dim=256, lm_dim=512, lm_layers=8, lm_heads=8, lm_ff=1536,
        lm_steps=20000, lm_batch=256, lm_lr=6e-4, cl_steps=10000, cl_batch=512, cl_lr=5e-4, mim_steps=10000,
        mim_batch=512, mim_lr=1e-3, vlm_steps=6000, vlm_batch=128, vlm_lr=3e-4, llm_lr=1e-4,
        eval_per_category=1000, probe_scenes=20000),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise ValueError(f"budget={name!r} is unknown; allowed values: {sorted(BUDGETS)}")
    return BUDGETS[name]
