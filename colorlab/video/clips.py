"""Colourise held-out clips with a checkpoint and score them: warp error along the exact flow, CDC, mode flip
rate of the ambiguous diamond, per-frame PSNR, colourfulness and the key colour kept; frame by frame, or
propagated from a key frame along the flow for hint models. Used by ``colorlab.evaluate``,
``python -m colorlab.video.evaluate`` and ``python -m colorlab.video``."""

from __future__ import annotations

import torch
from tqdm import tqdm

from colorlab.color import denormalize_lab, lab_to_uint8, normalize_lab, uint8_to_lab
from colorlab.data.synthetic import BIMODAL_AB
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


TABLE_KEYS = ["warp_error", "cdc", "flip_rate", "psnr", "colorfulness", "key_colour_kept"]


def markdown_table(rows: list[dict]) -> list[str]:
    lines = ["| model | " + " | ".join(TABLE_KEYS) + " |", "|---" * (len(TABLE_KEYS) + 1) + "|"]
    return lines + [f"| {r['model']} | " + " | ".join("—" if r[k] is None else f"{r[k]:.4g}" for k in TABLE_KEYS)
                    + " |" for r in rows]
