"""Sharded data in litdata's format (Lightning's streaming, DDP-aware, resumable dataset).

``python -m colorlab.prepare`` writes ``<out>/train`` and ``<out>/val``: one sample per image,
the photo resized so its shorter side is ``size`` and stored as JPEG bytes. ``data=shards
data.path=<out>`` streams them: litdata gives each DDP rank (and worker) its own part of the
shards, and its StreamingDataLoader can resume mid-epoch.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from litdata import StreamingDataset
from PIL import Image

from colorlab.data.photos import check_train_size, crop_for_split
from colorlab.io import draft_jpeg

SPLITS = ("train", "val")


def decode_jpeg(data, min_side: int | None = None) -> np.ndarray:
    """JPEG bytes -> uint8 (H, W, 3); with ``min_side`` at a reduced DCT scale when that still covers it."""
    with Image.open(io.BytesIO(bytes(data))) as image:
        if min_side is not None:
            draft_jpeg(image, min_side)
        return np.asarray(image.convert("RGB"))


class ShardCrops(StreamingDataset):
    """Items like PhotoCrops': uint8 ``rgb`` (3, size, size), ``index`` and ``item`` (the photo id)."""

    def __init__(self, path: Path, size: int, scale: int | None, train: bool, seed: int = 0,
                 length: int | None = None):
        # litdata's subsample draws a fraction of the samples (or whole repeats plus a fraction above 1)
        subsample = 1.0 if length is None else length / len(StreamingDataset(str(path)))
        super().__init__(str(path), shuffle=train, drop_last=train, seed=seed, subsample=subsample)
        self.size, self.scale, self.train, self.seed = size, scale or round(size * 8 / 7), train, seed

    @property
    def n_items(self) -> int:
        """Ids of per-item caches: positions in this dataset's sample list (with ``length``, litdata's
        subsampled list, which ``whole_image`` indexes too)."""
        return len(self)

    def whole_image(self, item: int) -> torch.Tensor:
        return torch.from_numpy(decode_jpeg(super().__getitem__(item)["jpeg"]).copy()).permute(2, 0, 1)

    def __getitem__(self, index) -> dict:
        sample = super().__getitem__(index)
        # the sample's position in the shards (litdata passes a ChunkedIndex while streaming): dense
        # ids 0..n-1 even where prepare skipped unreadable files, as per-item caches need
        item = int(getattr(index, "index", index))
        photo = decode_jpeg(sample["jpeg"], self.scale)
        rgb = crop_for_split(photo, self.size, self.scale, self.train, self.seed, item)
        return {"rgb": rgb, "index": item, "item": item}


def shards_splits(path: str | None, size: int, seed: int, scale: int | None = None, train_size: int | None = None):
    """(train, val) streaming datasets from the output of colorlab.prepare; ``train_size`` samples per
    training epoch (None: each sample once)."""
    check_train_size(train_size)
    if path is None:
        raise ValueError("data.path is not set: give the folder written by python -m colorlab.prepare")
    root = Path(path).expanduser()
    missing = [split for split in SPLITS if not (root / split / "index.json").is_file()]
    if missing:
        raise FileNotFoundError(f"data.path={path} holds no litdata shards for {missing} (expected "
                                f"{root}/<split>/index.json); write them with python -m colorlab.prepare")
    return (ShardCrops(root / "train", size, scale, True, seed, train_size),
            ShardCrops(root / "val", size, scale, False, seed))
