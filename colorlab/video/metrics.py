"""Temporal-consistency metrics for colourized clips.

- Warp error (Lai et al. 2018, "Learning Blind Video Temporal Consistency", ECCV): the mean over t of
  sum M_t * ||V_t - warp(V_{t+1}, F_t)||^2 / sum M_t, RGB in [0, 1], the squared norm summed over the
  3 channels (as in the authors' evaluation code), M_t the pixels of frame t visible in frame t+1.
- CDC, colour distribution consistency (Liu et al. 2021, "Temporally Consistent Video Colorization
  with Deep Feature Propagation and Self-regularization Learning"): the Jensen-Shannon divergence
  (log base 2, so in [0, 1]) between the 256-bin histograms of each RGB channel of frames t and t+d,
  averaged over frame pairs and channels, then over d in {1, 2, 4}.
- Mode flip rate (colorlab): on a shape whose colour is one of two opposite ab modes for the whole
  clip, the fraction of consecutive frame pairs whose decoded mean ab on the shape changes mode.
- Key colour kept (colorlab): the fraction of the frames showing that shape whose decoded mode is the
  clip's own (the one a key frame gave).

Conventions: clips are (T, 3, H, W); flows (T-1, 2, H, W) as in ``colorlab.flow``; masks
(T-1, 1, H, W) bool.
"""

from __future__ import annotations

import torch
from torch import Tensor

from colorlab.flow import warp

CDC_DILATIONS = (1, 2, 4)


def _check_clip(rgb: Tensor, name: str = "clip") -> None:
    if rgb.dim() != 4 or rgb.shape[1] != 3 or rgb.shape[0] < 2:
        raise ValueError(f"{name} must be (T, 3, H, W) with T >= 2 frames. Got {tuple(rgb.shape)}")


def warp_error(rgb: Tensor, flow: Tensor, mask: Tensor) -> float:
    """Lai et al. 2018 warp error of ``rgb`` (T, 3, H, W) in [0, 1] along the forward ``flow``
    (T-1, 2, H, W), over the non-occluded pixels ``mask`` (T-1, 1, H, W). Pairs with no visible
    pixel are skipped; a clip with none raises."""
    _check_clip(rgb)
    t = rgb.shape[0]
    if flow.shape[0] != t - 1 or mask.shape[0] != t - 1:
        raise ValueError(f"flow and mask need T-1 = {t - 1} pairs. Got {flow.shape[0]} and {mask.shape[0]}")
    rgb = rgb.double()
    warped, inside = warp(rgb[1:], flow.double())
    m = (mask.bool() & inside).double()
    sq = (rgb[:-1] - warped).pow(2).sum(1, keepdim=True) * m
    n = m.sum(dim=(1, 2, 3))
    keep = n > 0
    if not keep.any():
        raise ValueError("warp error needs at least one non-occluded pixel; the mask is empty")
    return float((sq.sum(dim=(1, 2, 3))[keep] / n[keep]).mean())


def _histograms(rgb_u8: Tensor) -> Tensor:
    """(T, 3, H, W) uint8 -> (T, 3, 256) normalised histograms."""
    t, c = rgb_u8.shape[:2]
    flat = rgb_u8.reshape(t * c, -1).long()
    ones = torch.ones_like(flat, dtype=torch.float64)
    hist = torch.zeros(t * c, 256, dtype=torch.float64).scatter_add_(1, flat, ones)
    return (hist / hist.sum(1, keepdim=True)).reshape(t, c, 256)


def js_divergence(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence in bits along the last axis of two distributions."""
    m = (p + q) / 2

    def kl(a, b):
        return torch.where(a > 0, a * torch.log2(a / b.clamp_min(1e-300)), torch.zeros_like(a)).sum(-1)

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def cdc(rgb_u8: Tensor, dilations=CDC_DILATIONS) -> float:
    """Liu et al. 2021 CDC of a uint8 clip (T, 3, H, W); dilations longer than the clip are skipped."""
    _check_clip(rgb_u8)
    if rgb_u8.dtype != torch.uint8:
        raise ValueError(f"cdc needs a uint8 RGB clip (256-bin histograms). Got {rgb_u8.dtype}")
    h = _histograms(rgb_u8)
    per_d = [float(js_divergence(h[:-d], h[d:]).mean()) for d in dilations if d < h.shape[0]]
    return sum(per_d) / len(per_d)


def clip_modes(ab: Tensor, region: Tensor, mode_ab) -> Tensor:
    """Mode (+1 first, -1 second, 0 no pixels) of each frame: the sign of the mean ab on ``region``
    (T, 1, H, W) projected on ``mode_ab`` (the first mode; the second is its opposite). ab (T, 2, H, W)."""
    r = region.bool().expand_as(ab).to(ab.dtype)
    mean = (ab * r).sum(dim=(2, 3)) / r.sum(dim=(2, 3)).clamp_min(1)
    return torch.sign(mean @ torch.tensor(mode_ab, dtype=ab.dtype))


def mode_flip_rate(ab: Tensor, region: Tensor, mode_ab) -> float:
    """Fraction of consecutive frame pairs (both with pixels on ``region``) whose mode differs."""
    modes = clip_modes(ab, region, mode_ab)
    both = (modes[:-1] != 0) & (modes[1:] != 0)
    if not both.any():
        raise ValueError("mode flip rate needs two consecutive frames with pixels on the region")
    return float((modes[:-1] != modes[1:])[both].double().mean())


def key_colour_kept(ab: Tensor, region: Tensor, mode_ab, mode: int) -> float:
    """Fraction of the frames with pixels on ``region`` whose mode (``clip_modes``) is ``mode`` (+1 / -1);
    frames where the shape is out of view do not count, as in ``mode_flip_rate``."""
    if mode not in (1, -1):
        raise ValueError(f"mode must be +1 (the first mode) or -1 (its opposite). Got {mode}")
    modes = clip_modes(ab, region, mode_ab)
    seen = modes != 0
    if not seen.any():
        raise ValueError("key colour kept needs a frame with pixels on the region")
    return float((modes[seen] == mode).double().mean())
