"""The text views of a scene: a coarse caption (alt-text) and the full scene text."""
from __future__ import annotations

from .scenes import Obj, WorldConfig


def describe(o: Obj, texture: bool = True) -> str:
    words = [o.size, o.color] + ([o.texture] if texture else []) + [o.shape]
    return " ".join(words)


def scene_text(scene: tuple[Obj, ...]) -> str:
    """Every object with every attribute and its cell, in raster order: what the text oracle reads.

    The shape comes first ("circle large red striped at r1 c2 ."): questions name an object by its shape, and a
    causal LM learns to look up what follows the name it matches, not what precedes it (docs/lab-notes/oracle-wordings.md)."""
    return " ".join(f"{o.shape} {o.size} {o.color} {o.texture} at r{o.row} c{o.col} ." for o in scene)


def caption(world: WorldConfig, scene: tuple[Obj, ...]) -> str:
    """Coarse alt-text: sizes, colors and shapes, no positions; texture only if ``world.caption_texture``."""
    return " and ".join(describe(o, texture=world.caption_texture) for o in scene)


def text_vocabulary(world: WorldConfig) -> list[str]:
    """All words the scene views use (the question templates add theirs)."""
    words = list(world.sizes) + list(world.colors) + list(world.textures) + list(world.shapes)
    words += [f"r{i}" for i in range(world.grid)] + [f"c{i}" for i in range(world.grid)]
    words += ["at", ".", "and"]
    return words
