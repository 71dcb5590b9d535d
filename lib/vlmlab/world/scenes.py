"""Scene graphs of the built-in world: objects with shape, color, size, texture and a grid cell.

A scene is a tuple of :class:`Obj`. Positions are cells of a ``grid x grid`` layout; the renderer jitters each
object inside its cell. Everything is drawn from a ``numpy.random.Generator`` so one seed gives one scene.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class WorldConfig:
    """Everything that defines the world. Its hash keys the backbone cache."""

    image_size: int = 64  # canvas side in pixels
    grid: int = 4  # objects sit in cells of a grid x grid layout (cell = image_size // grid px)
    min_objects: int = 1
    max_objects: int = 4
    shapes: tuple[str, ...] = ("circle", "square", "triangle", "cross")
    colors: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
    sizes: tuple[str, ...] = ("small", "large")
    textures: tuple[str, ...] = ("plain", "striped", "checkered")
    noise: float = 0.04  # std of the background/pixel noise, in [0, 1] intensity units
    caption_texture: bool = False  # captions (alt-text) omit texture by default, as web alt-text does
    # (shape, color) pairs never seen in train/val/test; the compositional split is built from them
    holdout: tuple[tuple[str, str], ...] = (
        ("circle", "red"), ("square", "green"), ("triangle", "blue"), ("cross", "yellow"),
    )

    def __post_init__(self):
        if self.image_size % self.grid:
            raise ValueError(f"image_size={self.image_size} must be a multiple of grid={self.grid}")
        if not 1 <= self.min_objects <= self.max_objects <= self.grid * self.grid:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= grid*grid, got {self.min_objects}, {self.max_objects}")
        if self.max_objects < 2:
            raise ValueError("max_objects must be >= 2: relation questions need two objects")

    @property
    def cell(self) -> int:
        return self.image_size // self.grid


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    texture: str
    row: int = 0
    col: int = 0

    @property
    def cell(self) -> tuple[int, int]:
        return (self.row, self.col)


@dataclass
class ObjectSampler:
    """Draws objects from the combinations a split allows (train excludes the held-out pairs)."""

    world: WorldConfig
    compositional: bool = False
    _holdout: frozenset = field(init=False)

    def __post_init__(self):
        self._holdout = frozenset(self.world.holdout)

    def allowed(self, shape: str, color: str) -> bool:
        # the compositional split allows every pair (and forces at least one held-out object per scene)
        return self.compositional or (shape, color) not in self._holdout

    def draw(self, rng: np.random.Generator, *, shape=None, color=None, size=None, texture=None,
             not_shapes=(), not_colors=(), not_pairs=()) -> Obj:
        """One object; fixed attributes are kept, excluded values are avoided."""
        w = self.world
        for _ in range(1000):
            s = shape or w.shapes[rng.integers(len(w.shapes))]
            c = color or w.colors[rng.integers(len(w.colors))]
            if s in not_shapes or c in not_colors or (s, c) in not_pairs or not self.allowed(s, c):
                if shape and color:
                    break
                continue
            z = size or w.sizes[rng.integers(len(w.sizes))]
            t = texture or w.textures[rng.integers(len(w.textures))]
            return Obj(s, c, z, t)
        raise ValueError(f"no allowed object with shape={shape} color={color} (excluded {not_shapes} {not_colors})")


def place(rng: np.random.Generator, world: WorldConfig, objs: list[Obj], cells=None) -> tuple[Obj, ...]:
    """Assign distinct grid cells (random unless given) and return the scene in raster order."""
    n = len(objs)
    if cells is None:
        flat = rng.choice(world.grid * world.grid, size=n, replace=False)
        cells = [(int(f) // world.grid, int(f) % world.grid) for f in flat]
    placed = [Obj(o.shape, o.color, o.size, o.texture, r, c) for o, (r, c) in zip(objs, cells)]
    return tuple(sorted(placed, key=lambda o: (o.row, o.col)))
