"""Clips with exact flow made from still photographs: a camera pans or zooms over a photo, so
temporal metrics can be measured on real image content (``python -m colorlab.video.evaluate --source``).

- ``motion="pan"``: frame t is the photo's ``size`` x ``size`` window at (y0 + t vy, x0 + t vx), an
  integer velocity (vx, vy) per clip (not both 0, each axis in [-max_speed, max_speed]). The content
  moves by -v: the forward flow is exactly (-vx, -vy) everywhere and every frame is a crop of the same
  uint8 photo, so the ground-truth clip's warp error along its flow is exactly 0.
- ``motion="zoom"``: the window's side changes by a factor r per frame (r drawn per clip in
  [1 - 0.08, 1 - 0.03] zooming in, its inverse zooming out), centred on a fixed point of the photo;
  frames are resampled bilinearly from the photo, ``zoom_detail`` (0.5) photo px per frame px in the
  widest window (no aliasing; frames are 2x to 3.3x upsampled, so softer than the pans'). The flow is
  the affine (u - c)(1/r - 1) about the frame centre c and ``valid`` the pixels that land inside the
  next frame. Frame t+1 warped along it reproduces frame t only up to interpolating twice and uint8
  rounding: the ground truth's warp error is an interpolation floor, not 0. Measured on 16 clips of
  the five sample photos: 2.1e-4 at 32 px, 1.4e-4 at 64 px (a zero flow: 3.1e-3, 9.6e-3); at
  zoom_detail 1 (sharp frames) 1.4e-3 and 7.3e-4. The evaluate table's ground-truth row reports it.

Clip items have the format of ``SyntheticVideo``'s (``rgb``, ``flow``, ``valid``, ``back_flow``,
``back_valid``, ``index``) without ``bimodal`` / ``mode``. Deterministic per (seed, index).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from colorlab.data.photos import resize_shorter_side

MOTIONS = ("pan", "zoom")
MAX_SPEED = 2  # px per frame, each axis (as synthetic_video's shapes)
ZOOM_RATE = (0.03, 0.08)  # relative change of the window's side per frame
ZOOM_DETAIL = 0.5  # photo px per frame px in the widest window of a zoom (< 1: frames oversample the photo)
_CLIP_STREAM = 29  # separates these draws from other uses of the same seed


def pan_flow(size: int, vx: int, vy: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """Flow of a camera moving by (vx, vy) px per frame, from a frame to the next (``step`` +1) or the
    previous (-1): float32 (2, size, size) (dx, dy) = -step * v, and bool (size, size), pixels that
    stay inside the frame."""
    dx, dy = -step * vx, -step * vy
    iy, ix = np.mgrid[0:size, 0:size]
    valid = (ix + dx >= 0) & (ix + dx < size) & (iy + dy >= 0) & (iy + dy < size)
    flow = np.stack([np.full((size, size), dx, np.float32), np.full((size, size), dy, np.float32)])
    return flow, valid


def zoom_flow(size: int, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Flow between two frames of a zoom about the frame centre whose window side is multiplied by
    ``ratio`` from the first to the second: float32 (2, size, size) (dx, dy) = (u - c)(1/ratio - 1),
    c = (size - 1) / 2, and bool (size, size), pixels that land inside the second frame."""
    c = (size - 1) / 2
    iy, ix = np.mgrid[0:size, 0:size].astype(np.float64)
    flow = np.stack([(ix - c) * (1 / ratio - 1), (iy - c) * (1 / ratio - 1)])
    ty, tx = iy + flow[1], ix + flow[0]
    eps = 1e-9
    valid = (tx >= -eps) & (tx <= size - 1 + eps) & (ty >= -eps) & (ty <= size - 1 + eps)
    return flow.astype(np.float32), valid


def resample(photo: np.ndarray, cy: float, cx: float, step: float, size: int) -> np.ndarray:
    """The ``size`` x ``size`` frame whose pixel u samples the photo (H, W, 3) uint8 bilinearly at
    c_photo + (u - (size - 1) / 2) * step (``step`` photo px per frame px): uint8 (size, size, 3)."""
    h, w = photo.shape[:2]
    u = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) * step
    ys, xs = torch.meshgrid(cy + u, cx + u, indexing="ij")
    grid = torch.stack([2 * xs / (w - 1) - 1, 2 * ys / (h - 1) - 1], dim=-1)[None]
    image = torch.from_numpy(photo).permute(2, 0, 1)[None].double()
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


class PhotoClips(Dataset):
    """``length`` clips (default: one per photo) of ``frames`` frames at ``size`` px panning or zooming over
    the photos of ``photos`` (any image dataset with ``n_items`` and ``whole_image(item)`` -> uint8
    (3, H, W), e.g. the ``data=samples`` or ``data=folder`` sets); clip i uses photo i % n_items. Items:
    uint8 ``rgb`` (T, 3, H, W), float ``flow`` (T-1, 2, H, W) (dx, dy, frame t to t+1), bool ``valid``
    (T-1, 1, H, W), ``back_flow`` / ``back_valid`` (frame t+1 to t), ``index`` and ``item`` (the photo).
    ``scale``: the photo's shorter side before panning (default: the least the pan needs, at least
    8/7 of ``size``); zooms use the photo at the shorter side ``size`` (the widest window, 1:1)."""

    def __init__(self, photos, size: int, frames: int = 8, motion: str = "pan", seed: int = 0,
                 length: int | None = None, max_speed: int = MAX_SPEED, scale: int | None = None,
                 zoom_detail: float = ZOOM_DETAIL):
        if motion not in MOTIONS:
            raise ValueError(f"motion must be one of {list(MOTIONS)}. Got {motion!r}")
        if frames < 2:
            raise ValueError(f"frames must be at least 2 (temporal metrics need a pair). Got {frames}")
        if not 0 < zoom_detail <= 1:
            raise ValueError(f"zoom_detail must be in (0, 1] photo px per frame px (above 1 bilinear sampling "
                             f"aliases). Got {zoom_detail}")
        if max_speed < 1:
            raise ValueError(f"max_speed must be >= 1 px per frame (a pan must move). Got {max_speed}")
        need = size + (frames - 1) * max_speed
        scale = scale or max(need, round(size * 8 / 7))
        if motion == "pan" and scale < need:
            raise ValueError(f"scale={scale} is too small for a {frames}-frame pan of up to {max_speed} px per "
                             f"frame at size {size}; give at least {need}")
        self.photos, self.size, self.frames, self.motion, self.seed = photos, size, frames, motion, seed
        self.length, self.max_speed, self.scale = length or photos.n_items, max_speed, scale
        self.zoom_detail = zoom_detail

    def __len__(self) -> int:
        return self.length

    def _photo(self, item: int, side: int) -> np.ndarray:
        rgb = self.photos.whole_image(item).permute(1, 2, 0).numpy()
        return resize_shorter_side(np.ascontiguousarray(rgb), side)  # uint8 (H', W', 3), min side == side

    def _pan(self, rng: np.random.Generator, photo: np.ndarray) -> dict:
        v = np.zeros(2, np.int64)
        while not v.any():
            v = rng.integers(-self.max_speed, self.max_speed + 1, 2)
        vx, vy = int(v[0]), int(v[1])
        h, w = photo.shape[:2]
        travel_y, travel_x = (self.frames - 1) * vy, (self.frames - 1) * vx
        y0 = int(rng.integers(max(0, -travel_y), h - self.size - max(0, travel_y) + 1))
        x0 = int(rng.integers(max(0, -travel_x), w - self.size - max(0, travel_x) + 1))
        s = self.size
        rgb = np.stack([photo[y0 + t * vy:y0 + t * vy + s, x0 + t * vx:x0 + t * vx + s] for t in range(self.frames)])
        fw, bw = pan_flow(s, vx, vy, +1), pan_flow(s, vx, vy, -1)
        return {"rgb": rgb, "pairs": (fw, bw), "velocity": (vx, vy)}

    def _zoom(self, rng: np.random.Generator, photo: np.ndarray) -> dict:
        rate = rng.uniform(*ZOOM_RATE)
        ratio = 1 - rate if rng.random() < 0.5 else 1 / (1 - rate)  # window side, frame t+1 over frame t
        steps = ratio ** np.arange(self.frames)
        steps = steps / steps.max() * self.zoom_detail  # the widest window at zoom_detail photo px per frame px
        h, w = photo.shape[:2]
        half = (self.size - 1) / 2 * self.zoom_detail
        cy, cx = rng.uniform(half, h - 1 - half), rng.uniform(half, w - 1 - half)
        rgb = np.stack([resample(photo, cy, cx, step, self.size) for step in steps])
        return {"rgb": rgb, "pairs": (zoom_flow(self.size, ratio), zoom_flow(self.size, 1 / ratio)), "ratio": ratio}

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:  # also ends ``for clip in clips``, which stops at IndexError
            raise IndexError(f"clip {index} of {self.length}")
        rng = np.random.default_rng([self.seed, _CLIP_STREAM, index])
        item = index % self.photos.n_items
        if self.motion == "pan":
            clip = self._pan(rng, self._photo(item, self.scale))
        else:
            clip = self._zoom(rng, self._photo(item, math.ceil((self.size - 1) * self.zoom_detail) + 1))
        (flow, valid), (back, back_valid) = clip.pop("pairs")
        n = self.frames - 1  # the motion is the same between every pair of frames
        return {"rgb": torch.from_numpy(clip.pop("rgb")).permute(0, 3, 1, 2).contiguous(),
                "flow": _repeat(flow, n), "valid": _repeat(valid[None], n),
                "back_flow": _repeat(back, n), "back_valid": _repeat(back_valid[None], n),
                "index": index, "item": item, **clip}


def _repeat(a: np.ndarray, n: int) -> torch.Tensor:
    return torch.from_numpy(a)[None].repeat(n, *([1] * a.ndim))


def source_photos(source: str, size: int, seed: int = 0):
    """The photos of a source, as an image dataset (``n_items``, ``whole_image``): ``samples`` the five
    scikit-image photos of ``data=samples`` (models trained on data=samples have seen four of them),
    ``folder:ROOT`` every usable colour image under ROOT (pick photos the model did not train on)."""
    from colorlab.data.photos import SKIMAGE_PHOTOS, FolderImages, PhotoCrops, scan_folder

    if source == "samples":
        import skimage.data

        def load(i):
            photo = getattr(skimage.data, SKIMAGE_PHOTOS[i])()
            return photo[0] if isinstance(photo, tuple) else photo  # stereo pairs: left view

        return PhotoCrops(load, len(SKIMAGE_PHOTOS), size, None, False, seed=seed)
    if source.startswith("folder:") and len(source) > len("folder:"):
        root = Path(source[len("folder:"):]).expanduser()
        if not root.is_dir():
            raise ValueError(f"source {source!r}: {root} is not a directory")
        paths, _ = scan_folder(root)
        if not paths:
            raise ValueError(f"source {source!r}: no usable colour image under {root}")
        photos = FolderImages(paths, size, None, False, seed)
        photos.reduced_decode = False  # whole photos at full size: PhotoClips resizes them itself
        return photos
    raise ValueError(f"source must be 'samples' or 'folder:/path/to/photos' for photo clips. Got {source!r}")


def photo_clip_set(source: str, size: int, clips: int, frames: int = 8, motion: str = "pan", seed: int = 0
                   ) -> PhotoClips:
    """``clips`` clips panning or zooming over the photos of ``source`` (``samples`` or ``folder:ROOT``),
    cycling over the photos; see ``PhotoClips``."""
    if motion not in MOTIONS:
        raise ValueError(f"motion must be one of {list(MOTIONS)}. Got {motion!r}")
    return PhotoClips(source_photos(source, size, seed), size, frames, motion, seed, length=clips)
