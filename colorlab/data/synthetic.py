"""Procedural scenes: a colorization benchmark whose right answer is known.

Each scene has sky above a horizon, ground below it, one or two plain shapes and one
*bimodal* diamond. Every class has a fixed hue and chroma (``CLASS_AB``) and a lightness
drawn per instance from an overlapping range, so the gray image tells the colour only
through shape, position and texture. The diamond is green (``BIMODAL_AB``) with
probability ``p_first`` and, at the same lightness, the opposite ab (magenta) otherwise:
the L2-optimal prediction there is ``(2 p_first - 1) * BIMODAL_AB``, a washed-out green,
while the most likely colour is the full-chroma green. Regression averages the modes,
classification can commit to one; ``val/chroma_bimodal`` measures which happened.

Scenes are deterministic per (seed, split, index) and cost about 1 ms each at 64 px.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import lab2rgb
from torch.utils.data import Dataset

# ab in Lab units and the lightness range of each class; all in the sRGB gamut (checked in tests).
CLASS_AB = {
    "sky": (-5.0, -30.0),
    "ground": (15.0, 30.0),
    "square": (50.0, 35.0),  # red, horizontal stripes
    "disc": (10.0, -45.0),  # blue, smooth
}
CLASS_L = {"sky": (55.0, 75.0), "ground": (35.0, 60.0), "square": (45.0, 65.0), "disc": (45.0, 60.0)}
BIMODAL_AB = (-48.0, 40.0)  # green; the second mode is (48, -40), magenta, at equal lightness
BIMODAL_L = (45.0, 70.0)
TEXTURE_L = 5.0  # amplitude of the lightness textures, in L units
SPLIT_IDS = {"train": 0, "val": 1}


def _paint(lab: np.ndarray, mask: np.ndarray, lightness: np.ndarray | float, ab) -> None:
    lab[mask, 0] = lightness[mask] if isinstance(lightness, np.ndarray) else lightness
    lab[mask, 1], lab[mask, 2] = ab


def render_scene(rng: np.random.Generator, size: int, p_first: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: uint8 RGB (size, size, 3) and the bimodal-pixel mask, bool (size, size)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    lab = np.zeros((size, size, 3), np.float64)

    horizon = rng.uniform(0.35, 0.65) * size
    sky = yy < horizon
    sky_l = rng.uniform(*CLASS_L["sky"]) + 8.0 * (yy / size - 0.5)  # brighter towards the horizon
    _paint(lab, sky, sky_l, CLASS_AB["sky"])
    ground_l = rng.uniform(*CLASS_L["ground"]) + rng.normal(0.0, TEXTURE_L / 2, (size, size))
    _paint(lab, ~sky, ground_l, CLASS_AB["ground"])

    def centre_and_radius():
        r = rng.uniform(0.10, 0.18) * size
        return rng.uniform(r, size - r), rng.uniform(r, size - r), r

    for _ in range(rng.integers(1, 3)):
        cy, cx, r = centre_and_radius()
        if rng.random() < 0.5:
            mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
            stripes = TEXTURE_L * np.sign(np.sin(2 * np.pi * yy / 6.0))
            _paint(lab, mask, rng.uniform(*CLASS_L["square"]) + stripes, CLASS_AB["square"])
        else:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            _paint(lab, mask, rng.uniform(*CLASS_L["disc"]), CLASS_AB["disc"])

    cy, cx, r = centre_and_radius()
    bimodal = np.abs(yy - cy) + np.abs(xx - cx) < 1.2 * r
    checker = TEXTURE_L * (((yy // 3 + xx // 3) % 2) * 2 - 1)
    ab = BIMODAL_AB if rng.random() < p_first else (-BIMODAL_AB[0], -BIMODAL_AB[1])
    _paint(lab, bimodal, rng.uniform(*BIMODAL_L) + checker, ab)

    np.clip(lab[..., 0], 0.0, 100.0, out=lab[..., 0])
    rgb = (lab2rgb(lab) * 255.0 + 0.5).astype(np.uint8)
    return rgb, bimodal


class WholeItems(Dataset):
    """A dataset whose every item is its own whole image (a scene, a frame), ``length`` of them: the
    per-image caches (global embeddings) see each item as a distinct source image."""

    length: int

    def __len__(self) -> int:
        return self.length

    @property
    def n_items(self) -> int:
        return self.length

    def whole_image(self, item: int) -> torch.Tensor:
        return self[item]["rgb"]


class SyntheticScenes(WholeItems):
    """``length`` scenes of ``size`` px; items are dicts of uint8 ``rgb`` (3, H, W),
    bool ``bimodal`` (1, H, W), int ``index`` and int ``item`` (the source image's id)."""

    def __init__(self, size: int, length: int, seed: int, split: str, p_first: float = 0.7):
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}. Got {split!r}")
        if not 0.5 <= p_first <= 1.0:
            raise ValueError(f"p_first must be in [0.5, 1] (the first colour is the mode). Got {p_first}")
        self.size, self.length, self.seed, self.split, self.p_first = size, length, seed, split, p_first

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])
        rgb, bimodal = render_scene(rng, self.size, self.p_first)
        return {
            "rgb": torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
            "bimodal": torch.from_numpy(bimodal)[None],
            "index": index,
            "item": index,
        }


def synthetic_splits(size: int, seed: int, train_size: int, val_size: int, p_first: float):
    """(train, val) datasets; the splits draw from disjoint random streams."""
    return (
        SyntheticScenes(size, train_size, seed, "train", p_first),
        SyntheticScenes(size, val_size, seed, "val", p_first),
    )
