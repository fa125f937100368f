"""Optical flow helpers.

Convention: ``flow[t]`` is the *forward* flow from frame t to frame t+1, float (2, H, W) in pixels,
channel 0 = dx (columns), channel 1 = dy (rows): the content at pixel (y, x) of frame t is at
(y + dy, x + dx) in frame t+1. ``warp(frame_{t+1}, flow[t])`` samples frame t+1 there, so it
brings frame t+1 back onto frame t's pixel grid (backward warping, as in Lai et al. 2018).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _check_flow(flow: Tensor, height: int, width: int) -> None:
    if flow.dim() != 4 or flow.shape[1] != 2 or tuple(flow.shape[-2:]) != (height, width):
        raise ValueError(f"flow must be (B, 2, {height}, {width}) in pixels (dx, dy). Got {tuple(flow.shape)}")


def warp(image: Tensor, flow: Tensor, mode: str = "bilinear") -> tuple[Tensor, Tensor]:
    """Sample ``image`` (B, C, H, W) at x + flow: returns (warped image, in-bounds mask (B, 1, H, W) bool).

    Integer flows with ``mode="nearest"`` or ``"bilinear"`` reproduce pixels exactly."""
    b, _, h, w = image.shape
    _check_flow(flow, h, w)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype, device=flow.device),
                            torch.arange(w, dtype=flow.dtype, device=flow.device), indexing="ij")
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    inside = ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1))[:, None]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)
    out = F.grid_sample(image.to(flow.dtype), grid, mode=mode, padding_mode="border", align_corners=True)
    return out, inside


def consistency_mask(flow_fw: Tensor, flow_bw: Tensor, alpha: float = 0.01, beta: float = 0.5) -> Tensor:
    """Non-occluded pixels of an *estimated* forward flow by forward-backward consistency
    (Sundaram et al. 2010, as used by Lai et al. 2018): |f + b(x+f)|^2 < alpha(|f|^2 + |b(x+f)|^2) + beta."""
    bw, inside = warp(flow_bw, flow_fw)
    lhs = (flow_fw + bw).pow(2).sum(1, keepdim=True)
    rhs = alpha * (flow_fw.pow(2).sum(1, keepdim=True) + bw.pow(2).sum(1, keepdim=True)) + beta
    return (lhs < rhs) & inside


def farneback(gray_a: np.ndarray, gray_b: np.ndarray) -> np.ndarray:
    """OpenCV's Farneback flow (no weights) from uint8 gray frame a to b: float32 (2, H, W) (dx, dy)."""
    import cv2

    if gray_a.shape != gray_b.shape or gray_a.ndim != 2:
        raise ValueError(f"farneback needs two gray frames of one size. Got {gray_a.shape} and {gray_b.shape}")
    flow = cv2.calcOpticalFlowFarneback(gray_a, gray_b, None, pyr_scale=0.5, levels=3, winsize=15,
                                        iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    return np.ascontiguousarray(flow.transpose(2, 0, 1))
