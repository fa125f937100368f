"""What the folder sources (photos and videos) share: the directory check, the scan that skips and
counts unusable files, the split by file, the shorter-side size and the crop."""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from tqdm import tqdm

Item = TypeVar("Item")


class Unusable(Exception):
    """A file left out of a folder source; ``reason`` is what the skip summary counts it under."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def existing_dir(path: str | None, key: str, what: str, example: str) -> Path:
    """``path`` as a directory, or a clear error naming ``key``, ``what`` it holds and an ``example`` path."""
    if path is None:
        raise ValueError(f"{key} is not set: give a directory of {what}, e.g. {key}={example}")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{key}={path} is not a directory")
    return p


def scan_files(root: Path, suffixes, read: Callable[[Path], Item], what: str,
               wrong_suffix: str = "not a supported suffix") -> tuple[list[Item], Counter]:
    """``read(path)`` for every file under root with one of ``suffixes``, in path order: the items it
    returned and a Counter of the files skipped, by reason (``wrong_suffix``, or ``Unusable.reason``)."""
    items, skipped = [], Counter()
    paths = sorted(p for p in root.rglob("*") if not p.is_dir())  # broken links too: read() reports them
    for path in tqdm(paths, desc=f"indexing {what}", unit="file", delay=2, disable=None):
        if path.suffix.lower() not in suffixes:
            if path.is_file():
                skipped[wrong_suffix] += 1
            continue
        try:
            items.append(read(path))
        except Unusable as e:
            skipped[e.reason] += 1
    return items, skipped


def split_by_file(items: list[Item], path_of: Callable[[Item], Path], root: Path,
                  val_fraction: float) -> tuple[list[Item], list[Item]]:
    """(train, val): an item validates when a hash of its path relative to ``root`` falls below
    ``val_fraction``, so the split is the same on every machine, run and training seed (runs of several
    seeds are compared on the same held-out files). With two items or more, neither side is empty:
    the last item validates when none hashed there, the first trains when all did."""
    def held_out(item) -> bool:
        return zlib.crc32(str(path_of(item).relative_to(root)).encode()) % 10_000 < val_fraction * 10_000

    val = [item for item in items if held_out(item)]
    train = [item for item in items if not held_out(item)]
    if not val and len(train) > 1:
        val = [train.pop()]
    if not train and len(val) > 1:
        train = [val.pop(0)]
    return train, val


def shorter_side_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) resized so that the shorter side is ``side``, aspect kept (never below ``side``)."""
    scale = side / min(width, height)
    return max(side, round(width * scale)), max(side, round(height * scale))


def crop_array(rgb: np.ndarray, size: int, top: int, left: int, flip: bool) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (size, size, 3) contiguous, at (top, left), mirrored left-right if ``flip``."""
    patch = rgb[top:top + size, left:left + size]
    return np.ascontiguousarray(patch[:, ::-1] if flip else patch)
