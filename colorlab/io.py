"""Reading image files robustly: every odd kind of file either becomes an RGB array or a clear error."""

from __future__ import annotations

import io
import math
import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"}
# PIL modes that carry no colour: such files are gray photographs.
REDUCIBLE_MODES = {"L", "LA", "RGB", "RGBA", "CMYK", "I", "F"}  # modes Image.reduce takes
ORIENTATION_TAG = 0x0112  # EXIF
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
        empty = path.stat().st_size == 0
    except FileNotFoundError as e:
        raise UnreadableImage(path, "missing file") from e
    except OSError as e:  # a symlink loop
        raise UnreadableImage(path, "not an image", str(e)) from e
    if empty:
        raise UnreadableImage(path, "empty file")
    return _open(path, path)


def _open(source, label: Path | str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(source)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UnreadableImage(label, "decompression bomb", str(e)) from e
    except FileNotFoundError as e:
        raise UnreadableImage(label, "missing file") from e
    except OSError as e:  # PIL's UnidentifiedImageError is an OSError
        raise UnreadableImage(label, "not an image", str(e)) from e


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


def read_rgb(path: Path | str, min_side: int | None = None) -> np.ndarray:
    """Read a file as uint8 RGB (H, W, 3); raises UnreadableImage (never a deep PIL error).

    min_side: the caller only needs the shorter side to be at least this many pixels (it resizes
    down afterwards). JPEGs are then decoded at reduced scale (1/2, 1/4 or 1/8, straight from the
    DCT, PIL's draft mode) when the reduced image still has both sides >= min_side; several times
    faster on large photos. Other formats, and JPEGs too small to reduce, decode at full size.
    """
    image = open_image(path)
    if min_side is not None:
        draft_jpeg(image, min_side)
    return _decode(image, path)


def draft_jpeg(image: Image.Image, min_side: int) -> Image.Image:
    """Ask PIL to decode a (still unloaded) JPEG at the largest 1/2, 1/4 or 1/8 reduction that keeps
    both sides >= min_side; a no-op for other formats and small images. Returns the image."""
    if min_side < 1:
        raise ValueError(f"min_side must be a positive number of pixels. Got {min_side}")
    if image.format == "JPEG":
        try:
            image.draft(None, (min_side, min_side))  # PIL picks scale <= min(W // min_side, H // min_side)
        except (OSError, ValueError, SyntaxError):
            pass  # a corrupt header: the full decode reports it
    return image


def read_rgb_bytes(data: bytes, label: str = "upload") -> np.ndarray:
    """The same for the bytes of an uploaded file."""
    if not data:
        raise UnreadableImage(label, "empty file")
    return _decode(_open(io.BytesIO(data), label), label)


def budget_size(width: int, height: int, max_pixels: int) -> tuple[int, int]:
    """(width, height), or the largest size with the same aspect and at most ``max_pixels`` pixels."""
    if width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))


def read_rgb_within(data: bytes, max_pixels: int, max_decode_pixels: int, label: str = "upload"
                    ) -> tuple[np.ndarray, tuple[int, int]]:
    """The bytes of an uploaded file as uint8 RGB (H, W, 3) of at most ``max_pixels`` pixels (aspect kept),
    and the photo's own (height, width). Memory stays near 4 bytes per decoded pixel: JPEGs decode at
    reduced scale, other formats are box-reduced by a whole factor before conversion, Lanczos does the
    rest. Files of more than ``max_decode_pixels`` pixels (after that JPEG reduction) raise
    UnreadableImage with reason "too many pixels"."""
    if not data:
        raise UnreadableImage(label, "empty file")
    image = _open(io.BytesIO(data), label)
    with image:
        swap = image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8)  # EXIF rotation by 90 degrees
        width, height = image.size
        target = budget_size(width, height, max_pixels)
        if image.format == "JPEG" and target != (width, height):
            try:
                image.draft(None, target)  # decode straight from the DCT at 1/2, 1/4 or 1/8 (>= target)
            except (OSError, ValueError, SyntaxError):
                pass  # a corrupt header: the decode reports it
        if image.width * image.height > max_decode_pixels:
            raise UnreadableImage(label, "too many pixels", f"{width}x{height}; at most "
                                  f"{max_decode_pixels / 1e6:g} megapixels are decoded")
        factor = min(image.width // target[0], image.height // target[1])
        try:
            if factor >= 2 and image.mode in REDUCIBLE_MODES:
                image.load()
                image = image.reduce(factor)  # box average: a copy of 1 / factor^2 the pixels
            rgb = to_rgb_array(image)
        except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
            raise UnreadableImage(label, "corrupt image data", str(e)) from e
    final = target[::-1] if swap else target
    if rgb.shape[1::-1] != final:
        rgb = np.array(Image.fromarray(rgb).resize(final, Image.Resampling.LANCZOS))  # writable
    return rgb, ((width, height) if swap else (height, width))


def _decode(image: Image.Image, label: Path | str) -> np.ndarray:
    try:
        with image:
            return to_rgb_array(image)
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
        raise UnreadableImage(label, "corrupt image data", str(e)) from e


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
