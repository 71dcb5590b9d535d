"""The two references every result is shown against, built from the same backbones, world and budget.

- ``Blind`` (the floor): the same pretrained LLM fine-tuned on question -> answer with no image, for the same
  number of steps as a VLM run. The world draws answers independently of the question's wording, so it should
  sit at chance; that it does is measured, not assumed.
- ``TextOracle`` (the ceiling): the pretrained LLM reading the full scene text instead of the image, untrained
  further. A VLM's job is to make the image read like that text.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..train import Stage
from .base import VLM, Knobs


@dataclass
class NoKnobs(Knobs):
    pass


class Blind(VLM):
    arch = "blind"
    KnobsClass = NoKnobs
    eval_task = "blind"
    uses_images = False

    @classmethod
    def backbones_needed(cls, knobs):
        return ("lm",)

    def stages(self):
        return [Stage("instruct", ("lm",), task="blind", share=1.0, lr={"lm": self.budget.llm_lr})]


class TextOracle(VLM):
    arch = "oracle"
    KnobsClass = NoKnobs
    eval_task = "oracle"
    uses_images = False

    @classmethod
    def backbones_needed(cls, knobs):
        return ("lm",)

    def stages(self):
        return []
