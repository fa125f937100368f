"""Optical flow maths: backward warping, forward-backward consistency and OpenCV's Farneback estimate,
shared by the video data sources, the carried-colour hints of training and video inference.

Convention: ``flow[t]`` is the *forward* flow from frame t to frame t+1, float (2, H, W) in pixels,
channel 0 = dx (columns), channel 1 = dy (rows): the content at pixel (y, x) of frame t is at
(y + dy, x + dx) in frame t+1. ``warp(frame_{t+1}, flow[t])`` samples frame t+1 there, so it
brings frame t+1 back onto frame t's pixel grid (backward warping, as in Lai et al. 2018).

RAFT (torchvision, weights by path) is in ``colorlab.video.flow``, with the estimator choice of inference.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

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


def checked_flow(gray_a: np.ndarray, gray_b: np.ndarray, flow_fn=farneback) -> tuple[Tensor, Tensor]:
    """The estimated flow from gray frame a to b (2, H, W) and the pixels of a it holds for (1, H, W) bool:
    ``flow_fn`` both ways, checked forward-backward (``consistency_mask``)."""
    fwd = torch.from_numpy(flow_fn(gray_a, gray_b))[None]
    bwd = torch.from_numpy(flow_fn(gray_b, gray_a))[None]
    return fwd[0], consistency_mask(fwd, bwd)[0]


class _Pending(Sequence):
    """A list of values computed by futures: indexing waits for that one."""

    def __init__(self, futures: list):
        self.futures = futures

    def __len__(self) -> int:
        return len(self.futures)

    def __getitem__(self, i):
        return self.futures[i].result()


def estimated_flows(rgb_u8: torch.Tensor, flow_fn=farneback, background: bool = False) -> Sequence:
    """For t = 1 .. T-1: (flow from frame t back to t-1 (2, H, W), its non-occluded pixels (1, H, W) bool),
    estimated by ``flow_fn(gray_a, gray_b)`` (default OpenCV Farneback; RAFT:
    ``colorlab.video.flow.flow_estimator``) on the gray frames and checked forward-backward.
    ``background``: computed in a thread, in order, while the caller runs the network (the flows need
    only the gray frames; OpenCV and torch release the GIL)."""
    from colorlab.color import normalize_lab, uint8_to_lab

    gray = ((normalize_lab(uint8_to_lab(rgb_u8))[0][:, 0] + 0.5) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    if not background:
        return [checked_flow(gray[t], gray[t - 1], flow_fn) for t in range(1, len(gray))]
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flow")
    pending = _Pending([pool.submit(checked_flow, gray[t], gray[t - 1], flow_fn) for t in range(1, len(gray))])
    pool.shutdown(wait=False)  # the queued pairs still run; the thread ends after the last
    return pending
