"""Images of a data source read with PIL, as the uint8 RGB arrays vlmlab's models take."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def check_image(path: Path) -> None:
    """Raise ValueError unless ``path`` is an image file PIL can identify (only its header is read)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise ValueError(f"image {str(path)!r} does not exist; expected an image file (paths are relative to the "
                         f"data file's folder, or to --image-root)")
    try:
        with Image.open(path):
            pass
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"image {str(path)!r} is not an image PIL can read ({e})") from None


def load_image(image, size: int) -> np.ndarray:
    """uint8 [size, size, 3] from a path or a PIL image; resized (bicubic) only when it is not that size already,
    so that an exported world image comes back pixel for pixel."""
    from PIL import Image

    img = Image.open(image) if isinstance(image, (str, Path)) else image
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)
