"""Rasterise scenes into uint8 RGB images.

Shape masks and texture patterns are precomputed per (shape, size, texture) so that drawing an object is one
masked array assignment; generation is then never the bottleneck of training (see benchmarks/).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .scenes import Obj, WorldConfig

RGB = {
    "red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230),
    "yellow": (230, 210, 40), "purple": (160, 60, 200), "orange": (245, 140, 20),
    "cyan": (40, 200, 210), "white": (235, 235, 235),
}
BACKGROUND = 40  # dark grey


def object_px(world: WorldConfig, size: str) -> int:
    """Side of an object's bounding box in pixels: large nearly fills its cell, small is about half."""
    return world.cell - 2 if size == "large" else world.cell // 2 + 1


def _shape_mask(shape: str, n: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    c = n / 2
    if shape == "circle":
        return (x - c) ** 2 + (y - c) ** 2 <= c * c
    if shape == "square":
        return np.ones((n, n), bool)
    if shape == "triangle":  # apex up
        return np.abs(x - c) <= (y / n) * c + 0.5
    if shape == "cross":
        w = max(1.0, n / 6)
        return (np.abs(x - c) <= w) | (np.abs(y - c) <= w)
    raise ValueError(f"unknown shape {shape!r}")


TEXTURE_HIGH, TEXTURE_LOW = 1.0, 0.4  # the two gains of a patterned texture; plain sits at their mean


def _texture_gain(texture: str, n: int) -> np.ndarray:
    """Per-pixel multiplier on the object color: the high-frequency detail that captions omit.

    Every texture has the same mean gain, so an object's average colour says nothing about its texture: only
    local contrast does (horizontal 2-px stripes against a 2-px checker, or none)."""
    y, x = np.mgrid[0:n, 0:n]
    hi, lo = TEXTURE_HIGH, TEXTURE_LOW
    if texture == "plain":
        return np.full((n, n), (hi + lo) / 2, np.float32)
    if texture == "striped":  # horizontal stripes, 2 px each (period 4 px)
        return np.where((y // 2) % 2 == 0, hi, lo).astype(np.float32)
    if texture == "checkered":  # a checkerboard of 2-px squares
        return np.where((y // 2 + x // 2) % 2 == 0, hi, lo).astype(np.float32)
    raise ValueError(f"unknown texture {texture!r}")


@lru_cache(maxsize=None)
def _sprite(shape: str, color: str, texture: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    mask = _shape_mask(shape, n)
    rgb = np.asarray(RGB[color], np.float32)[None, None, :] * _texture_gain(texture, n)[:, :, None]
    return mask, rgb.astype(np.float32)


def render(world: WorldConfig, scene: tuple[Obj, ...], rng: np.random.Generator, clean: bool = False):
    """Scene -> uint8 image [H, W, 3]. The rng supplies position jitter and noise (deterministic per seed).

    ``clean=True`` returns ``(image, clean_image)``: the same draw, and the render before the noise is added (the
    MIM encoder's reconstruction target)."""
    s, cell = world.image_size, world.cell
    img = np.full((s, s, 3), BACKGROUND, np.float32)
    for o in scene:
        n = object_px(world, o.size)
        mask, rgb = _sprite(o.shape, o.color, o.texture, n)
        oy, ox = (int(v) for v in rng.integers(0, cell - n + 1, size=2))
        y0, x0 = o.row * cell + oy, o.col * cell + ox
        region = img[y0:y0 + n, x0:x0 + n]
        region[mask] = rgb[mask]
    plain = img.astype(np.uint8) if clean else None
    img += rng.normal(0.0, world.noise * 255.0, size=img.shape).astype(np.float32)
    out = np.clip(img, 0, 255).astype(np.uint8)
    return (out, plain) if clean else out
