"""Samples, splits and tokenized batches of the built-in world.

Sample ``i`` of split ``s`` under seed ``k`` is drawn from ``default_rng([k, s, i])``: the same seed gives
byte-identical images and questions in any order, on any machine, in any number of worker processes.
Categories cycle with the index, so every batch of 8·m consecutive samples is exactly balanced.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from .questions import CATEGORIES, CONTROL_RELATIONS, QA, RELATIONS, ask_lookup, ask_more, make_question, wording
from .render import render
from .scenes import Obj, ObjectSampler, WorldConfig
from .text import caption, scene_text
from .tokenizer import IMG, build_tokenizer

SPLITS = {"train": 0, "val": 1, "test": 2, "compositional": 3}
# the text each training/evaluation task feeds the model: (prompt, target)
TASKS = ("qa", "describe", "caption", "oracle", "blind", "scene_lm")
# how a prompt shows the image: where the LM's pretraining text had the scene text ("scene : ..."), so that a
# frozen LM reads the image tokens in the place and after the words it was trained on
IMAGE_PROMPT = f"scene : {IMG}"


@dataclass(frozen=True)
class Sample:
    image: np.ndarray | None  # uint8 [H, W, 3]; None when drawn without it (text-only batches)
    scene: tuple[Obj, ...]
    qa: QA
    split: str
    index: int
    world: WorldConfig
    extra_qa: tuple = ()  # further (question, answer) pairs about the same scene (LM pretraining only)
    clean_image: np.ndarray | None = None  # the render before its pixel noise (``World.sample(clean=True)``)

    @property
    def scene_text(self) -> str:
        return scene_text(self.scene)


def prompt_and_target(task: str, s: Sample) -> tuple[str, str]:
    q, a = s.qa.question, s.qa.answer
    if task == "qa":  # the VQA format every VLM is trained and evaluated on: the oracle's, the image for the text
        return f"{IMAGE_PROMPT} question : {q} answer :", a
    if task == "describe":  # alignment data: the image must be read like the scene text
        return f"{IMAGE_PROMPT} scene :", s.scene_text
    if task == "caption":  # coarse alt-text (X-Former's image-text objectives, CLIP-style pairs)
        return f"{IMAGE_PROMPT} caption :", caption(s.world, s.scene)
    if task == "oracle":  # the text oracle reads the scene text instead of the image
        return f"scene : {s.scene_text} question : {q} answer :", a
    if task == "blind":  # the blind floor sees the question only
        return f"question : {q} answer :", a
    if task == "scene_lm":  # LM pretraining: scene text, then several questions and answers, all supervised
        more = "".join(f" question : {mq} answer : {ma}" for mq, ma in s.extra_qa)
        return "scene :", f"{s.scene_text} question : {q} answer : {a}{more}"
    raise ValueError(f"task={task!r}; allowed: {TASKS}")


class World:
    """A seeded, endless supply of samples and batches of the built-in world."""

    def __init__(self, config: WorldConfig | None = None, seed: int = 0, categories=CATEGORIES, tokenizer=None,
                 relations=RELATIONS):
        self.config = config or WorldConfig()
        self.seed = int(seed)
        bad = [c for c in categories if c not in CATEGORIES]
        if bad:
            raise ValueError(f"categories={bad} unknown; allowed: {CATEGORIES}")
        self.categories = tuple(categories)
        bad = [r for r in relations if r not in RELATIONS + CONTROL_RELATIONS] or ([] if relations else ["(none)"])
        if bad:
            raise ValueError(f"relations={bad} unknown; allowed: {RELATIONS + CONTROL_RELATIONS}")
        self.relations = tuple(relations)  # the spatial questions' relations (a control adds "same column")
        # the world's word-level tokenizer, or a real one (every answer must then start a new token)
        self.tokenizer = tokenizer if tokenizer is not None else build_tokenizer(self.config)
        self._samplers = {False: ObjectSampler(self.config), True: ObjectSampler(self.config, compositional=True)}

    def sample(self, split: str, index: int, image: bool = True, clean: bool = False, grounding: float = 0.0) -> Sample:
        """Sample ``index`` of ``split``. ``image=False`` skips rendering (a third of the cost of a text-only
        batch): the scene and question are drawn before the image, so they are the same either way. ``clean``
        also keeps the render before its noise. ``grounding`` (train split only) is the probability that the
        question is replaced by a single-object look-up about the same scene ("what column is the circle in ?",
        category "grounding"); the image is the same either way."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; allowed: {tuple(SPLITS)}")
        if grounding and split != "train":
            raise ValueError(f"grounding={grounding}: look-up questions are training data; split={split!r}")
        rng = np.random.default_rng([self.seed, SPLITS[split], int(index)])
        category = self.categories[index % len(self.categories)]
        scene, qa = make_question(rng, self.config, self._samplers[split == "compositional"], category,
                                  self.relations)
        pixels = plain = None
        if image:  # the noise-free copy only when asked: sampling is on every training step's path
            pixels, plain = (render(self.config, scene, rng, clean=True) if clean
                             else (render(self.config, scene, rng), None))
        if grounding:
            g = np.random.default_rng([self.seed, SPLITS[split], int(index), 2])
            lookup = ask_lookup(g, scene) if g.random() < grounding else None
            if lookup is not None:
                qa = QA(*lookup, "grounding", ())
        return Sample(pixels, scene, qa, split, int(index), self.config, clean_image=plain)

    def sample_with_questions(self, split: str, index: int, k: int, image: bool = True) -> Sample:
        """A sample plus k further well-posed questions about its scene (denser supervision for the LM)."""
        s = self.sample(split, index, image)
        rng = np.random.default_rng([self.seed, SPLITS[split], int(index), 1])
        return dataclasses.replace(s, extra_qa=tuple(ask_more(rng, self.config, s.scene, k)))

    def samples(self, split: str, start: int, n: int, image: bool = True, clean: bool = False,
                grounding: float = 0.0) -> list[Sample]:
        return [self.sample(split, i, image, clean, grounding) for i in range(start, start + n)]

    def caption(self, s: Sample) -> str:
        return caption(self.config, s.scene)

    # ---- tensors -------------------------------------------------------------------------------------------
    @staticmethod
    def images(samples: list[Sample], clean: bool = False) -> torch.Tensor:
        """uint8 [B,H,W,3] -> float [B,3,H,W] in [0,1]; ``clean``: the renders before their noise."""
        arr = np.stack([s.clean_image if clean else s.image for s in samples])
        return torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)

    def encode(self, task: str, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """Tokenize prompt+target; labels are -100 on the prompt and padding (loss on the target + eos)."""
        tok = self.tokenizer
        pairs = [prompt_and_target(task, s) for s in samples]
        prompts = tok([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
        # the leading space makes a subword tokenizer see " red" as it would inside "answer : red" (the
        # word-level tokenizer ignores it)
        targets = tok([" " + t for _, t in pairs], add_special_tokens=False)["input_ids"]
        seqs, labs = [], []
        for p, t in zip(prompts, targets):
            seqs.append([tok.bos_token_id] + p + t + [tok.eos_token_id])
            labs.append([-100] * (1 + len(p)) + t + [tok.eos_token_id])
        L = max(map(len, seqs))
        ids = torch.full((len(seqs), L), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(seqs), L), -100, dtype=torch.long)
        mask = torch.zeros((len(seqs), L), dtype=torch.long)
        for i, (s, l) in enumerate(zip(seqs, labs)):
            ids[i, : len(s)] = torch.tensor(s)
            labels[i, : len(l)] = torch.tensor(l)
            mask[i, : len(s)] = 1
        # position of the first answer token (the evaluator scores the logits one step before it)
        first = (labels != -100).int().argmax(dim=1)
        return {"input_ids": ids, "labels": labels, "attention_mask": mask, "answer_pos": first}

    def batch(self, task: str, split: str, start: int, n: int, with_images: bool = True, extra_questions: int = 0,
              grounding: float = 0.0) -> dict:
        if extra_questions:
            samples = [self.sample_with_questions(split, i, extra_questions, with_images)
                       for i in range(start, start + n)]
        else:
            samples = self.samples(split, start, n, with_images, grounding=grounding)
        out = self.encode(task, samples)
        if with_images:
            out["pixel_values"] = self.images(samples)
        out["category"] = [s.qa.category for s in samples]
        out["wording"] = [wording(s.qa.question, self.config) for s in samples]
        out["n_answers"] = torch.tensor([len(s.qa.answers) for s in samples])  # 0 for a look-up (never scored)
        out["answer_sets"] = [list(s.qa.answers) for s in samples]
        return out
