"""Reading image files robustly: every odd kind of file either becomes an RGB array or a clear error."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
# PIL modes that carry no colour: such files are gray photographs.
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class UnreadableImage(Exception):
    """A file that cannot be used as an image; ``reason`` is a short, countable label."""

    def __init__(self, path: Path | str, reason: str, detail: str = ""):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))


def open_image(path: Path | str) -> Image.Image:
    """Open an image lazily (header only), with EXIF rotation not yet applied.

    Raises UnreadableImage for missing files, empty files, non-images and decompression bombs.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise UnreadableImage(path, "empty file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(path)
    except UnreadableImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnreadableImage(path, "decompression bomb", str(e)) from e
    except FileNotFoundError as e:
        raise UnreadableImage(path, "missing file") from e
    except OSError as e:  # PIL's UnidentifiedImageError is an OSError; so is a symlink loop
        raise UnreadableImage(path, "not an image", str(e)) from e


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Decode any PIL image to uint8 RGB (H, W, 3), upright (EXIF orientation applied).

    Alpha is composited onto white, palettes and CMYK are converted, 16-bit values are scaled.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max() > 255 else 255.0
        gray = np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "P" or image.mode.endswith("A") or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return np.array(image.convert("RGB"), dtype=np.uint8)  # writable, unlike np.asarray of PIL


def read_rgb(path: Path | str) -> np.ndarray:
    """Read a file as uint8 RGB (H, W, 3); raises UnreadableImage (never a deep PIL error)."""
    image = open_image(path)
    try:
        with image:
            return to_rgb_array(image)
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
        raise UnreadableImage(path, "corrupt image data", str(e)) from e


def summarize_skips(skipped: Counter, what: str) -> str:
    """One line such as '3 files skipped in data.root: 2 not an image, 1 empty file'."""
    total = sum(skipped.values())
    reasons = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
    return f"{total} files skipped in {what}: {reasons}"


def atomic_save(obj, path: Path) -> Path:
    """torch.save through a temporary file and a rename: readers never see a half-written file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path
