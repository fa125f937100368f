"""Temporal metrics of a checkpoint on held-out ``synthetic_video`` clips, next to the ground truth.

``python -m colorlab.video.evaluate CKPT [CKPT ...] [--clips 128] [--size 32] [--frames 8]
[--source synthetic|samples|folder:ROOT] [--motion pan|zoom]`` prints a Markdown table: warp error
(exact flow and occlusion), CDC, mode flip rate of the ambiguous diamond, per-frame PSNR and
colourfulness, over ``--clips`` clips of ``--frames`` frames of ``--size`` px (the diamond's mode is a
coin flip per clip: 16 clips moved PSNR by 1.2 dB). Per-frame models see one L frame; models trained with
data.stack > 1 see the stack centred on each frame (clamped at the clip's ends). ``--source samples`` or
``folder:ROOT`` measures on clips panning or zooming (``--motion``) over real photos
(``colorlab/video/photo_clips.py``) instead: they have no bimodal diamond, so flip rate and key colour kept
are absent (None, "—" in the table).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from colorlab.cli import error
from colorlab.color import denormalize_lab, lab_to_uint8, normalize_lab, uint8_to_lab
from colorlab.config import ConfigError, split_arguments, usage_exit_code
from colorlab.data.synthetic import BIMODAL_AB
from colorlab.data.video_synthetic import SyntheticVideo
from colorlab.flow import estimated_flows
from colorlab.metrics import colorfulness
from colorlab.video.metrics import cdc, key_colour_kept, mode_flip_rate, warp_error


def psnr_u8(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = (a.double() - b.double()).pow(2).mean()
    return float(10 * torch.log10(255.0**2 / mse.clamp_min(1e-12)))


def clip_scores(rgb_u8: torch.Tensor, clip: dict, lab_ab: torch.Tensor) -> dict:
    """Scores of a colourized clip (uint8 (T, 3, H, W), its ab in Lab units (T, 2, H, W))."""
    return {"warp_error": warp_error(rgb_u8.double() / 255, clip["flow"], clip["valid"]),
            "cdc": cdc(rgb_u8),
            "flip_rate": mode_flip_rate(lab_ab, clip["bimodal"], BIMODAL_AB) if "bimodal" in clip else None,
            "key_colour_kept": key_colour_kept(lab_ab, clip["bimodal"], BIMODAL_AB, clip["mode"]) if "bimodal" in clip
            else None,
            "psnr": sum(psnr_u8(p, t) for p, t in zip(rgb_u8, clip["rgb"], strict=True)) / len(rgb_u8),
            "colorfulness": float(colorfulness(rgb_u8.float() / 255).mean())}


def device_of(model) -> torch.device:
    """Where the model's parameters live (the CPU for a model without any)."""
    return next(model.parameters(), torch.empty(0)).device


@torch.no_grad()
def colorize_clip(model, rgb_u8: torch.Tensor, progress: bool = False, chunk: int = 16
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(colourized uint8 clip, its ab in Lab units) from the L of ``rgb_u8`` (T, 3, H, W), ``chunk`` frames
    per network call on the model's device; both returned on the CPU."""
    l, _ = normalize_lab(uint8_to_lab(rgb_u8.to(device_of(model))))
    stack = int((model.config or {}).get("data", {}).get("stack", 1) or 1)
    inp = l
    if stack > 1:
        t = l.shape[0]
        idx = [[min(max(u, 0), t - 1) for u in range(i - stack // 2, i + stack // 2 + 1)] for i in range(t)]
        inp = l[:, 0][torch.tensor(idx)]
    bar = tqdm(total=len(inp), desc="colorize", unit="frame", disable=None if progress else True)
    abs_ = []
    for start in range(0, len(inp), chunk):
        abs_.append(model.predict_ab(model(inp[start:start + chunk]), l.shape[-2:]))
        bar.update(len(abs_[-1]))
    bar.close()
    lab = denormalize_lab(l, torch.cat(abs_)).cpu()
    return lab_to_uint8(lab), lab[:, 1:]


@torch.no_grad()
def propagate_clip(model, rgb_u8: torch.Tensor, key_ab: torch.Tensor | None = None,
                   key_mask: torch.Tensor | None = None, progress: bool = False, flows=None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Key-frame propagation with a hint model: frame 0 gets ``key_ab`` (normalised ab (2, H, W), the
    user's colours) where ``key_mask`` (1, H, W) is 1 (None: every pixel; no key_ab: no hints), every
    later frame t the previous prediction carried along ``flows[t - 1]`` (flow from t back to t-1,
    non-occluded mask; default ``estimated_flows``: Farneback from the gray frames, computed while the
    network runs), the mask as the hint mask. Runs on the model's device; returns on the CPU."""
    from colorlab.flow import warp

    device = device_of(model)
    l, _ = normalize_lab(uint8_to_lab(rgb_u8.to(device)))
    h, w = l.shape[-2:]
    abs_ = []
    hint_ab = torch.zeros(1, 2, h, w, device=device)
    hint_mask = torch.zeros(1, 1, h, w, device=device)
    if key_ab is not None:
        hint_ab = key_ab[None].float().to(device)
        hint_mask = torch.ones(1, 1, h, w, device=device) if key_mask is None else key_mask[None].float().to(device)
    if flows is None and l.shape[0] > 1:
        flows = estimated_flows(rgb_u8, background=True)
    for t in tqdm(range(l.shape[0]), desc="propagate", unit="frame", disable=None if progress else True):
        if t > 0:
            back, mask = flows[t - 1]
            hint_mask = mask[None].float().to(device)
            hint_ab = warp(abs_[-1], back[None].float().to(device))[0] * hint_mask
        abs_.append(model.predict_ab(model(l[t:t + 1], None, hint_ab, hint_mask), (h, w)))
    lab = denormalize_lab(l, torch.cat(abs_)).cpu()
    return lab_to_uint8(lab), lab[:, 1:]


def mean_scores(scores: list[dict]) -> dict:
    """Each key's mean over clips; None where the clips have no such score (no bimodal shape)."""
    return {k: None if any(s[k] is None for s in scores) else sum(s[k] for s in scores) / len(scores)
            for k in scores[0]}


def truth_row(items: list[dict]) -> dict:
    """The ground-truth clips' own scores: the floor every model is reported beside."""
    truth = [clip_scores(c["rgb"], c, uint8_to_lab(c["rgb"])[:, 1:]) for c in items]
    return {"model": "ground truth", **mean_scores(truth), "psnr": None,  # against itself: infinite
            "clips": len(items)}


def model_rows(model, label: str, items: list[dict]) -> list[dict]:
    """Scores of one model on clips: frame by frame (stack models see their stacks); hint models
    also propagate, with no hints and from a ground-truth key frame, along the exact and the
    Farneback flow."""
    runs = [("", lambda c: colorize_clip(model, c["rgb"]))]
    if model.hint_sampling is not None:
        def exact(c):
            return list(zip(c["back_flow"], c["back_valid"], strict=True))

        def key(c):
            return normalize_lab(uint8_to_lab(c["rgb"][:1]))[1][0]

        runs = [(" (frame by frame, no hints)", runs[0][1]),
                (" (propagation, exact flow)", lambda c: propagate_clip(model, c["rgb"], flows=exact(c))),
                (" (key frame + propagation, exact flow)", lambda c: propagate_clip(model, c["rgb"], key(c),
                                                                                     flows=exact(c))),
                (" (key frame + propagation, Farneback)", lambda c: propagate_clip(model, c["rgb"], key(c)))]
    rows = []
    for suffix, run in runs:
        scores = []
        for c in tqdm(items, desc=f"{label}{suffix}"[-60:], unit="clip", disable=None, leave=False):
            rgb, ab = run(c)
            scores.append(clip_scores(rgb, c, ab))
        rows.append({"model": label + suffix, **mean_scores(scores)})
    return rows


def clip_set(source: str, clips: int, size: int, frames: int, seed: int, motion: str):
    """The held-out clips: ``synthetic`` (synthetic_video's val split) or photo clips of ``samples`` /
    ``folder:ROOT`` (``motion`` pan or zoom)."""
    if source == "synthetic":
        if motion != "pan":
            raise ValueError(f"motion={motion!r} applies to photo clips (source samples or folder:ROOT); "
                             "synthetic clips move their shapes")
        return SyntheticVideo(size, clips, seed, "val", frames, p_first=0.5)
    from colorlab.video.photo_clips import photo_clip_set

    return photo_clip_set(source, size, clips, frames, motion, seed)


def evaluate(paths: list[str], clips: int, size: int, frames: int, seed: int = 0, source: str = "synthetic",
             motion: str = "pan") -> list[dict]:
    from colorlab.models import load_colorizer

    data = clip_set(source, clips, size, frames, seed, motion)
    items = [data[i] for i in range(clips)]
    rows = [truth_row(items)]
    for path in paths:
        rows += model_rows(load_colorizer(path), path, items)
    return rows


TABLE_KEYS = ["warp_error", "cdc", "flip_rate", "psnr", "colorfulness", "key_colour_kept"]


def markdown_table(rows: list[dict]) -> list[str]:
    lines = ["| model | " + " | ".join(TABLE_KEYS) + " |", "|---" * (len(TABLE_KEYS) + 1) + "|"]
    return lines + [f"| {r['model']} | " + " | ".join("—" if r[k] is None else f"{r[k]:.4g}" for k in TABLE_KEYS)
                    + " |" for r in rows]


FLAGS = {"--clips": int, "--size": int, "--frames": int, "--source": str, "--motion": str}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        options, _, checkpoints = split_arguments(argv, (), (), "checkpoints", FLAGS)
        missing = [path for path in checkpoints if not Path(path).is_file()]
        if not checkpoints or missing:
            raise ConfigError(f"checkpoint(s) not found: {missing}" if missing else "give at least one checkpoint")
        numbers = {k: options.get(f"--{k}", default) for k, default in (("clips", 128), ("size", 32), ("frames", 8))}
        if min(numbers.values()) < 1:
            raise ConfigError(f"--clips, --size and --frames must be >= 1. Got {numbers}")
        rows = evaluate(checkpoints, **numbers, source=options.get("--source", "synthetic"),
                        motion=options.get("--motion", "pan"))
    except ValueError as e:  # ConfigError, a source or motion that is not valid, a file that is no checkpoint
        return error("video.evaluate", e)
    print("\n".join(markdown_table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
