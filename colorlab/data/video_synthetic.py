"""``data=synthetic_video``: clips of the synthetic scenes (same classes, colours and bimodal
diamond as ``colorlab/data/synthetic.py``) whose shapes move at known integer velocities, so the
exact forward flow and occlusion mask come with every clip. The diamond's colour (green or
magenta at equal lightness) is drawn once per clip with probability ``p_first`` (default 0.5: a
single frame cannot tell the mode). Every frame gets fresh sensor noise in L (``noise``, L units).
Deterministic per (seed, split, index); a 8-frame 64 px clip costs a few ms.
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.color import lab2rgb
from torch.utils.data import Dataset

from colorlab.data.synthetic import BIMODAL_AB, BIMODAL_L, CLASS_AB, CLASS_L, SPLIT_IDS, TEXTURE_L, WholeItems

MAX_SPEED = 2  # px per frame, each axis


def _shape_mask(kind: str, yy, xx, cy, cx, r):
    if kind == "square":
        return (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r)
    if kind == "disc":
        return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
    return np.abs(yy - cy) + np.abs(xx - cx) < 1.2 * r  # bimodal diamond


def clip_scene(rng: np.random.Generator, size: int, p_first: float, shapes: list[dict] | None = None) -> dict:
    """A clip's static background, moving shapes (kind, cy, cx, r, vy, vx, L; drawn in order, later
    on top) and the diamond's mode (+1 green, -1 magenta, drawn once per clip)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    horizon = rng.uniform(0.35, 0.65) * size
    sky = yy < horizon
    bg = np.zeros((size, size, 3))
    bg[..., 0] = np.where(sky, rng.uniform(*CLASS_L["sky"]) + 8.0 * (yy / size - 0.5),
                          rng.uniform(*CLASS_L["ground"]) + rng.normal(0.0, TEXTURE_L / 2, (size, size)))
    bg[..., 1] = np.where(sky, CLASS_AB["sky"][0], CLASS_AB["ground"][0])
    bg[..., 2] = np.where(sky, CLASS_AB["sky"][1], CLASS_AB["ground"][1])
    mode = 1 if rng.random() < p_first else -1
    if shapes is None:
        shapes = []
        for kind in [("square" if rng.random() < 0.5 else "disc") for _ in range(rng.integers(1, 3))] + ["bimodal"]:
            r = rng.uniform(0.10, 0.18) * size
            shapes.append({"kind": kind, "cy": rng.uniform(r, size - r), "cx": rng.uniform(r, size - r), "r": r,
                           "vy": int(rng.integers(-MAX_SPEED, MAX_SPEED + 1)),
                           "vx": int(rng.integers(-MAX_SPEED, MAX_SPEED + 1)),
                           "L": rng.uniform(*(BIMODAL_L if kind == "bimodal" else CLASS_L[kind]))})
    return {"size": size, "bg": bg, "shapes": shapes, "mode": mode}


def render_frame(scene: dict, t: int, noise: float, noise_rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Frame t of a clip: uint8 RGB (H, W, 3) and the layer labels (H, W) (0 background, i + 1 shape i)."""
    size = scene["size"]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    lab = scene["bg"].copy()
    labels = np.zeros((size, size), np.int64)
    for i, s in enumerate(scene["shapes"]):
        cy, cx = s["cy"] + t * s["vy"], s["cx"] + t * s["vx"]
        m = _shape_mask(s["kind"], yy, xx, cy, cx, s["r"])
        labels[m] = i + 1
        ly, lx = yy - cy, xx - cx  # textures move with the shape
        if s["kind"] == "square":
            lab[m, 0] = s["L"] + (TEXTURE_L * np.sign(np.sin(2 * np.pi * (ly + 1000.25) / 6.0)))[m]
            ab = CLASS_AB["square"]
        elif s["kind"] == "disc":
            lab[m, 0], ab = s["L"], CLASS_AB["disc"]
        else:
            cells = (np.floor(ly + 0.5) + 999) // 3 + (np.floor(lx + 0.5) + 999) // 3
            checker = TEXTURE_L * ((cells % 2) * 2 - 1)
            lab[m, 0] = s["L"] + checker[m]
            ab = BIMODAL_AB if scene["mode"] == 1 else (-BIMODAL_AB[0], -BIMODAL_AB[1])
        lab[m, 1], lab[m, 2] = ab
    if noise > 0:
        lab[..., 0] += noise_rng.normal(0.0, noise, (size, size))
    np.clip(lab[..., 0], 0.0, 100.0, out=lab[..., 0])
    return (lab2rgb(lab) * 255.0 + 0.5).astype(np.uint8), labels


def layer_velocities(shapes: list[dict]) -> np.ndarray:
    """(len(shapes) + 1, 2) int (dx, dy) per layer label: 0 the static background, i + 1 shape i."""
    return np.array([[0, 0]] + [[s["vx"], s["vy"]] for s in shapes], np.int64)


def exact_flow(labels_from: np.ndarray, labels_to: np.ndarray, velocity: np.ndarray, step: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """Exact flow from a frame to the next (``step`` +1) or the previous (-1) one, and its mask:
    float32 (2, H, W) (dx, dy) = step * the velocity of the topmost layer, and bool (H, W), pixels
    still visible there (inside the frame, the same layer on top)."""
    size_y, size_x = labels_from.shape
    d = step * velocity[labels_from]
    iy, ix = np.mgrid[0:size_y, 0:size_x]
    ty, tx = iy + d[..., 1], ix + d[..., 0]
    inside = (ty >= 0) & (ty < size_y) & (tx >= 0) & (tx < size_x)
    valid = inside & (labels_to[ty.clip(0, size_y - 1), tx.clip(0, size_x - 1)] == labels_from)
    return np.ascontiguousarray(d.transpose(2, 0, 1).astype(np.float32)), valid


def carry_back(previous_rgb: np.ndarray, back: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Frame t-1 (H, W, 3) carried onto frame t's grid along the exact (integer) flow ``back`` from t
    to t-1 (2, H, W); pixels not ``valid`` (disoccluded) are 0."""
    h, w = valid.shape
    iy, ix = np.mgrid[0:h, 0:w]
    ty = (iy + back[1].astype(np.int64)).clip(0, h - 1)
    tx = (ix + back[0].astype(np.int64)).clip(0, w - 1)
    return previous_rgb[ty, tx] * valid[..., None]


def render_clip(rng: np.random.Generator, size: int, frames: int, p_first: float, noise: float = 2.0,
                shapes: list[dict] | None = None, noise_seed=None) -> dict:
    """One clip as numpy arrays: ``rgb`` uint8 (T, H, W, 3), ``flow`` float32 (T-1, 2, H, W) (dx, dy),
    ``valid`` bool (T-1, H, W) (pixel of frame t visible in frame t+1), ``back_flow`` and
    ``back_valid`` the same from frame t+1 to frame t, ``bimodal`` bool (T, H, W),
    ``mode`` +1 (green) or -1 (magenta). ``shapes`` replaces the random ones when given; the
    background is static. Frame t's noise comes from ``noise_seed + [t]`` (a list) when given."""
    scene = clip_scene(rng, size, p_first, shapes)
    shapes = scene["shapes"]
    rgb = np.zeros((frames, size, size, 3), np.uint8)
    labels = np.zeros((frames, size, size), np.int64)
    for t in range(frames):
        noise_rng = rng if noise_seed is None else np.random.default_rng([*noise_seed, t])
        rgb[t], labels[t] = render_frame(scene, t, noise, noise_rng)
    # exact flow: the velocity of the topmost layer; visible iff the same layer is on top at x + v in t+1
    v = layer_velocities(shapes)
    fw = [exact_flow(labels[t], labels[t + 1], v, +1) for t in range(frames - 1)]
    bw = [exact_flow(labels[t + 1], labels[t], v, -1) for t in range(frames - 1)]
    bimodal_label = next((i + 1 for i, s in enumerate(shapes) if s["kind"] == "bimodal"), -1)
    return {"rgb": rgb, "flow": np.stack([f for f, _ in fw]), "valid": np.stack([m for _, m in fw]),
            "back_flow": np.stack([f for f, _ in bw]), "back_valid": np.stack([m for _, m in bw]),
            "bimodal": labels == bimodal_label, "mode": scene["mode"]}


class SyntheticVideo(Dataset):
    """``length`` clips of ``frames`` frames at ``size`` px; items are dicts of uint8 ``rgb`` (T, 3, H, W),
    float ``flow`` (T-1, 2, H, W), bool ``valid`` (T-1, 1, H, W), ``back_flow`` / ``back_valid`` (the
    same from frame t+1 back to t), bool ``bimodal`` (T, 1, H, W), int ``mode`` and ``index``."""

    def __init__(self, size: int, length: int, seed: int, split: str, frames: int = 8, p_first: float = 0.5,
                 noise: float = 2.0):
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}. Got {split!r}")
        if not 0.0 <= p_first <= 1.0:
            raise ValueError(f"p_first must be a probability in [0, 1]. Got {p_first}")
        if frames < 2:
            raise ValueError(f"frames must be at least 2 (temporal metrics need a pair). Got {frames}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0 (L units). Got {noise}")
        self.size, self.length, self.seed, self.split = size, length, seed, split
        self.frames, self.p_first, self.noise = frames, p_first, noise

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:  # also ends iteration (the sequence protocol)
            raise IndexError(f"clip {index} of {self.length}")
        key = [self.seed, SPLIT_IDS[self.split], 13, index]
        c = render_clip(np.random.default_rng(key), self.size, self.frames, self.p_first, self.noise,
                        noise_seed=[*key, 1])
        return {"rgb": torch.from_numpy(c["rgb"]).permute(0, 3, 1, 2).contiguous(),
                "flow": torch.from_numpy(c["flow"]), "valid": torch.from_numpy(c["valid"])[:, None],
                "back_flow": torch.from_numpy(c["back_flow"]), "back_valid": torch.from_numpy(c["back_valid"])[:, None],
                "bimodal": torch.from_numpy(c["bimodal"])[:, None], "mode": c["mode"], "index": index}


def check_stack(stack: int) -> None:
    if stack < 1 or stack % 2 == 0:
        raise ValueError(f"data.stack must be an odd number of frames >= 1 (centre frame predicted). Got {stack}")


def centred_stack(frames: dict[int, np.ndarray], centre: int, stack: int, length: int) -> torch.Tensor:
    """uint8 (stack, 3, H, W): frames centre - stack // 2 .. centre + stack // 2 of a clip of ``length``
    frames (clamped at its ends), from ``frames`` (frame number -> uint8 (H, W, 3))."""
    half = stack // 2
    picked = [frames[min(max(u, 0), length - 1)] for u in range(centre - half, centre + half + 1)]
    return torch.from_numpy(np.stack(picked)).permute(0, 3, 1, 2).contiguous()


class SyntheticVideoFrames(WholeItems):
    """The frames of ``SyntheticVideo`` clips one by one, for the image pipeline (``data=synthetic_video``):
    item ``i`` is frame ``i % frames`` of clip ``i // frames``, rendered alone (the same pixels as in
    the whole clip), as the image sources' dicts: uint8 ``rgb`` (3, H, W), bool ``bimodal``
    (1, H, W), ``index``, ``item``; with ``stack`` > 1 (odd) also uint8 ``context`` (stack, 3, H, W),
    the frames centred on it (clamped at the clip's ends); with ``previous`` also uint8 ``previous``
    (3, H, W), frame t-1 carried onto frame t along the exact flow, and bool ``previous_valid``
    (1, H, W), the pixels of frame t visible in frame t-1 (none for t = 0): video_propagate's
    training hints; and, for the temporal loss (``temporal.weight``), uint8 ``previous_frame``
    (3, H, W) (frame t-1 itself), ``previous_context`` (its stack, when ``stack`` > 1) and float
    ``previous_flow`` (2, H, W), the exact flow from frame t back to t-1."""

    def __init__(self, clips: SyntheticVideo, stack: int = 1, previous: bool = False):
        check_stack(stack)
        self.clips, self.stack, self.previous = clips, stack, previous
        self.length = clips.length * clips.frames

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"frame {index} of {self.length}")
        c = self.clips
        clip, t = divmod(index, c.frames)
        key = [c.seed, SPLIT_IDS[c.split], 13, clip]
        scene = clip_scene(np.random.default_rng(key), c.size, c.p_first)
        half = self.stack // 2
        out = {"index": index, "item": index}
        frames = {}
        before = range(t - 1 - half, t + half) if self.previous else []  # frame t-1 and its stack
        for u in [*range(t - half, t + half + 1), *before]:
            u = min(max(u, 0), c.frames - 1)
            if u not in frames:
                frames[u] = render_frame(scene, u, c.noise, np.random.default_rng([*key, 1, u]))
        rgb, labels = frames[t]
        bimodal_label = next(i + 1 for i, s in enumerate(scene["shapes"]) if s["kind"] == "bimodal")
        out["rgb"] = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
        out["bimodal"] = torch.from_numpy(labels == bimodal_label)[None]
        images = {u: f[0] for u, f in frames.items()}
        if self.stack > 1:
            out["context"] = centred_stack(images, t, self.stack, c.frames)
        if self.previous:
            if t == 0:
                prev, valid = np.zeros_like(rgb), np.zeros(labels.shape, bool)
                back = np.zeros((2, *labels.shape), np.float32)
            else:
                back, valid = exact_flow(labels, frames[t - 1][1], layer_velocities(scene["shapes"]), -1)
                prev = carry_back(frames[t - 1][0], back, valid)
            out["previous"] = torch.from_numpy(prev).permute(2, 0, 1).contiguous()
            out["previous_valid"] = torch.from_numpy(valid)[None]
            # for temporal.weight: frame t-1 itself (or its stack) and the flow from t back to it
            out["previous_flow"] = torch.from_numpy(back)
            out["previous_frame"] = torch.from_numpy(frames[max(t - 1, 0)][0]).permute(2, 0, 1).contiguous()
            if self.stack > 1:
                out["previous_context"] = centred_stack(images, t - 1, self.stack, c.frames)
        return out


def synthetic_video_splits(size: int, seed: int, train_size: int, val_size: int, frames: int = 8,
                           p_first: float = 0.5, noise: float = 2.0, stack: int = 1, previous: bool = False):
    """(train, val) per-frame datasets (``train_size`` / ``val_size`` clips of ``frames`` frames)
    from disjoint random streams; ``SyntheticVideo(...)`` gives the same clips whole."""
    return tuple(SyntheticVideoFrames(SyntheticVideo(size, n, seed, split, frames, p_first, noise), stack, previous)
                 for split, n in (("train", train_size), ("val", val_size)))
