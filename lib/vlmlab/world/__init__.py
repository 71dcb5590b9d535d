"""The built-in synthetic world: scenes, rendering, text views, questions, splits and a tokenizer."""
from .dataset import IMAGE_PROMPT, SPLITS, TASKS, Sample, World, prompt_and_target
from .questions import CATEGORIES, SEMANTIC, STRUCTURAL, QA, wording
from .render import render
from .scenes import Obj, WorldConfig
from .text import caption, scene_text
from .tokenizer import IMG, build_tokenizer

__all__ = ["IMAGE_PROMPT", "World", "WorldConfig", "Sample", "Obj", "QA", "CATEGORIES", "SEMANTIC", "STRUCTURAL", "SPLITS",
           "TASKS", "IMG", "build_tokenizer", "render", "caption", "scene_text", "prompt_and_target", "wording"]
