"""Architectures behind one interface (``VLM``); ``ARCHS`` maps names to classes."""
from .base import VLM, Knobs, knob, splice
from .hovle import HoVLE
from .llava import Llava
from .llavit import LLaViT
from .ovis import Ovis
from .references import Blind, TextOracle
from .vwlmm import VWLMM
from .xformer import XFormer

ARCHS: dict[str, type[VLM]] = {"hovle": HoVLE, "llava": Llava, "llavit": LLaViT, "ovis": Ovis, "vwlmm": VWLMM, "xformer": XFormer}
REFERENCES: dict[str, type[VLM]] = {"blind": Blind, "oracle": TextOracle}


def register(cls: type[VLM]) -> type[VLM]:
    ARCHS[cls.arch] = cls
    return cls


def get_arch(name: str) -> type[VLM]:
    if name in ARCHS:
        return ARCHS[name]
    if name in REFERENCES:
        return REFERENCES[name]
    raise ValueError(f"arch={name!r} is unknown; allowed values: {sorted(ARCHS)}")


def backbones_needed(name: str, knobs: dict | None = None) -> tuple[str, ...]:
    """The pretrained backbones (``"lm"``, ``"cl"``, ``"mim"``) that arch ``name`` with ``knobs`` reads."""
    cls = get_arch(name)
    return cls.backbones_needed(cls.KnobsClass.build(name, knobs))


def build(name: str, backbones, budget, knobs: dict | None = None) -> VLM:
    cls = get_arch(name)
    return cls(backbones, cls.KnobsClass.build(name, knobs), budget)


__all__ = ["VLM", "Knobs", "knob", "splice", "ARCHS", "REFERENCES", "get_arch", "backbones_needed", "build", "register"]
