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

from colorlab.color import device_constant

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


# A scene's draws as one vector (SCENE_PARAMS,): the horizon and sky lightness, the number of plain shapes,
# each shape as (kind: 0 square | 1 disc, cy, cx, r, lightness), then the diamond as (cy, cx, r, lightness,
# mode: +1 first | -1 second); the ground's lightness, textured per pixel, travels beside it (size, size).
MAX_SHAPES = 2
SHAPE, DIAMOND = 3, 3 + 5 * MAX_SHAPES
SCENE_PARAMS = DIAMOND + 5


def draw_scene(rng: np.random.Generator, size: int, p_first: float) -> tuple[np.ndarray, np.ndarray]:
    """One scene's random draws, in their one order: the parameter vector (SCENE_PARAMS,) float64 and the
    ground's lightness (size, size) float64. ``paint_scene`` (numpy) and ``paint_scenes`` (torch, batched on
    any device) draw the same scene from them."""
    params = np.zeros(SCENE_PARAMS)
    params[0] = rng.uniform(0.35, 0.65) * size  # horizon
    params[1] = rng.uniform(*CLASS_L["sky"])
    ground_l = rng.uniform(*CLASS_L["ground"]) + rng.normal(0.0, TEXTURE_L / 2, (size, size))

    def centre_and_radius():
        r = rng.uniform(0.10, 0.18) * size
        return rng.uniform(r, size - r), rng.uniform(r, size - r), r

    params[2] = n_shapes = rng.integers(1, MAX_SHAPES + 1)
    for k in range(n_shapes):
        cy, cx, r = centre_and_radius()
        kind = 0 if rng.random() < 0.5 else 1
        lightness = rng.uniform(*CLASS_L["square" if kind == 0 else "disc"])
        params[SHAPE + 5 * k:SHAPE + 5 * k + 5] = kind, cy, cx, r, lightness
    cy, cx, r = centre_and_radius()
    mode = 1.0 if rng.random() < p_first else -1.0
    params[DIAMOND:] = cy, cx, r, rng.uniform(*BIMODAL_L), mode
    return params, ground_l


def stripes(size: int) -> np.ndarray:
    """The squares' horizontal stripes, +-TEXTURE_L per row (size,) float32: a function of the row alone,
    so the torch renderer takes numpy's values (float32 sin near multiples of pi differs between libraries)."""
    yy = np.arange(size, dtype=np.float32)
    return (TEXTURE_L * np.sign(np.sin(2 * np.pi * yy / 6.0))).astype(np.float32)


def paint_scene(params: np.ndarray, ground_l: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB (size, size, 3) and the diamond's mask, bool (size, size), from ``draw_scene``'s draws."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    lab = np.zeros((size, size, 3), np.float64)
    sky = yy < float(params[0])
    _paint(lab, sky, float(params[1]) + 8.0 * (yy / size - 0.5), CLASS_AB["sky"])  # brighter towards the horizon
    _paint(lab, ~sky, ground_l, CLASS_AB["ground"])
    for k in range(int(params[2])):
        kind, cy, cx, r, lightness = map(float, params[SHAPE + 5 * k:SHAPE + 5 * k + 5])
        if kind == 0:
            mask = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
            _paint(lab, mask, lightness + stripes(size)[:, None] * np.ones_like(xx), CLASS_AB["square"])
        else:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            _paint(lab, mask, lightness, CLASS_AB["disc"])
    cy, cx, r, lightness, mode = map(float, params[DIAMOND:])
    bimodal = np.abs(yy - cy) + np.abs(xx - cx) < 1.2 * r
    checker = TEXTURE_L * (((yy // 3 + xx // 3) % 2) * 2 - 1)
    _paint(lab, bimodal, lightness + checker, (mode * BIMODAL_AB[0], mode * BIMODAL_AB[1]))

    np.clip(lab[..., 0], 0.0, 100.0, out=lab[..., 0])
    rgb = (lab2rgb(lab) * 255.0 + 0.5).astype(np.uint8)
    return rgb, bimodal


def render_scene(rng: np.random.Generator, size: int, p_first: float) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: uint8 RGB (size, size, 3) and the bimodal-pixel mask, bool (size, size)."""
    return paint_scene(*draw_scene(rng, size, p_first), size)


def paint_scenes(params: torch.Tensor, ground_l: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``paint_scene`` for a batch, on the device of its inputs: ``draw_scene``'s vectors (B, SCENE_PARAMS)
    and ground lightness (B, H, W), fp32 -> uint8 RGB (B, 3, H, W) and the diamond's mask, bool (B, 1, H, W).
    Equal to the numpy painter up to fp32 rounding: the masks to the pixel but for edge ties, RGB within
    one level (kornia's Lab -> sRGB in fp32 against scikit-image's in float64; tests/test_synthetic_render.py)."""
    from colorlab.color import lab_to_uint8

    b, size = params.shape[0], ground_l.shape[-1]
    device, p = params.device, params.float()[:, :, None, None]  # (B, P, 1, 1): broadcast over pixels
    yy = torch.arange(size, device=device, dtype=torch.float32)[:, None].expand(size, size)
    xx = yy.t()
    sky = yy < p[:, 0]  # (B, H, W)
    l = torch.where(sky, p[:, 1] + 8.0 * (yy / size - 0.5), ground_l.float())
    a = torch.where(sky, CLASS_AB["sky"][0], CLASS_AB["ground"][0])
    bb = torch.where(sky, CLASS_AB["sky"][1], CLASS_AB["ground"][1])
    rows = device_constant(stripes, size, device=device)[:, None]  # copied from the host once per size
    for k in range(MAX_SHAPES):
        kind, cy, cx, r, lightness = (p[:, SHAPE + 5 * k + i] for i in range(5))
        square = ((yy - cy).abs() < r) & ((xx - cx).abs() < r) & (kind == 0)
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) & (kind == 1)
        present = p[:, 2] > k
        square, disc = square & present, disc & present
        l = torch.where(square, lightness + rows, torch.where(disc, lightness, l))
        a = torch.where(square, CLASS_AB["square"][0], torch.where(disc, CLASS_AB["disc"][0], a))
        bb = torch.where(square, CLASS_AB["square"][1], torch.where(disc, CLASS_AB["disc"][1], bb))
    cy, cx, r, lightness, mode = (p[:, DIAMOND + i] for i in range(5))
    bimodal = (yy - cy).abs() + (xx - cx).abs() < 1.2 * r
    checker = TEXTURE_L * (((yy // 3 + xx // 3) % 2) * 2 - 1)
    l = torch.where(bimodal, lightness + checker, l)
    a = torch.where(bimodal, mode * BIMODAL_AB[0], a)
    bb = torch.where(bimodal, mode * BIMODAL_AB[1], bb)
    lab = torch.stack([l.clamp(0.0, 100.0), a.expand(b, size, size), bb.expand(b, size, size)], dim=1)
    return lab_to_uint8(lab), bimodal[:, None]


def render_batch(batch: dict) -> dict:
    """A batch of drawn scenes (``scene``, ``ground_l`` from ``SyntheticScenes(render="device")``) painted
    where it lies: ``rgb`` uint8 (B, 3, H, W) and ``bimodal`` bool (B, 1, H, W) in their place."""
    if "scene" in batch:
        batch["rgb"], batch["bimodal"] = paint_scenes(batch.pop("scene"), batch.pop("ground_l"))
    return batch


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


RENDERS = ("cpu", "device", "auto")


class SyntheticScenes(WholeItems):
    """``length`` scenes of ``size`` px; items are dicts of uint8 ``rgb`` (3, H, W),
    bool ``bimodal`` (1, H, W), int ``index`` and int ``item`` (the source image's id).

    ``render="device"``: items carry the scene's draws instead (``scene`` (SCENE_PARAMS,) and ``ground_l``
    (H, W), fp32), and ``render_batch`` paints the batch on the training device, so workers only draw
    (~1 ms at 256 px against ~16 ms for drawing and painting). ``auto``: painted here until
    ``on_device`` is set (the DataModule sets it when training runs on a GPU)."""

    def __init__(self, size: int, length: int, seed: int, split: str, p_first: float = 0.7, render: str = "cpu"):
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}. Got {split!r}")
        if not 0.5 <= p_first <= 1.0:
            raise ValueError(f"p_first must be in [0.5, 1] (the first colour is the mode). Got {p_first}")
        if render not in RENDERS:
            raise ValueError(f"data.render must be one of {', '.join(RENDERS)}. Got {render!r}")
        self.size, self.length, self.seed, self.split, self.p_first = size, length, seed, split, p_first
        self.render, self.on_device = render, render == "device"

    def _draws(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return draw_scene(np.random.default_rng([self.seed, SPLIT_IDS[self.split], index]), self.size, self.p_first)

    def __getitem__(self, index: int) -> dict:
        params, ground_l = self._draws(index)
        if self.on_device:
            return {"scene": torch.from_numpy(params).float(), "ground_l": torch.from_numpy(ground_l).float(),
                    "index": index, "item": index}
        rgb, bimodal = paint_scene(params, ground_l, self.size)
        return {
            "rgb": torch.from_numpy(rgb).permute(2, 0, 1).contiguous(),
            "bimodal": torch.from_numpy(bimodal)[None],
            "index": index,
            "item": index,
        }

    def whole_image(self, item: int) -> torch.Tensor:  # painted here whatever ``render`` says
        return torch.from_numpy(paint_scene(*self._draws(item), self.size)[0]).permute(2, 0, 1).contiguous()


def synthetic_splits(size: int, seed: int, train_size: int, val_size: int, p_first: float, render: str = "cpu"):
    """(train, val) datasets; the splits draw from disjoint random streams. ``render`` applies to training
    (the validation split is painted on the CPU: small, and read by every command)."""
    return (
        SyntheticScenes(size, train_size, seed, "train", p_first, render),
        SyntheticScenes(size, val_size, seed, "val", p_first),
    )
