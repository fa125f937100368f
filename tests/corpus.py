"""A corpus of odd image files, generated on the fly (nothing is downloaded)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def colour_photo(seed: int, size=(40, 56)) -> np.ndarray:
    """A smooth, colourful uint8 (H, W, 3) image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]] / max(size)
    channels = [np.sin(2 * np.pi * (rng.uniform(0.5, 2) * yy + rng.uniform(0.5, 2) * xx) + rng.uniform(0, 6))
                for _ in range(3)]
    return ((np.stack(channels, axis=2) * 0.5 + 0.5) * 255).astype(np.uint8)


def bomb_png(path: Path, side: int = 30_000) -> None:
    """A valid PNG header claiming side x side pixels (beyond PIL's bomb limit), with no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def write_corpus(root: Path) -> dict[str, Path]:
    """One file of each odd kind under root; returns name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def add(name: str) -> Path:
        files[name] = root / name
        return files[name]

    for i in range(6):
        Image.fromarray(colour_photo(i)).save(add(f"good_{i}.jpg"), quality=95)
    add("zero_byte.jpg").write_bytes(b"")
    add("text.jpg").write_text("this is not an image\n")
    jpeg = (root / "good_0.jpg").read_bytes()
    add("truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    Image.fromarray(colour_photo(10)).convert("CMYK").save(add("cmyk.jpg"))
    gray16 = (colour_photo(11)[..., 0].astype(np.uint16) * 257)
    Image.fromarray(gray16).save(add("gray16.png"))
    Image.fromarray(colour_photo(12)).convert("P", palette=Image.ADAPTIVE).save(add("palette.png"))
    rgba = np.dstack([colour_photo(13), np.full((40, 56), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(add("rgba.png"))
    Image.fromarray(colour_photo(14)[..., 1]).save(add("gray.jpg"))
    Image.fromarray(colour_photo(15, size=(8, 8))).save(add("tiny_8x8.png"))
    bomb_png(add("bomb.png"))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(colour_photo(16, size=(20, 50))).save(add("exif_rotated.jpg"), exif=exif)
    Image.fromarray(colour_photo(17)).save(add("ünïcødé_名前.png"))
    loop = add("loop.jpg")
    loop.symlink_to(loop.name)  # a symlink to itself
    return files
