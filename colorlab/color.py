"""CIE Lab colour conversion and normalisation, on whatever device the tensors live.

kornia's ``rgb_to_lab`` is a port of scikit-image's ``rgb2lab`` (sRGB, D65). Lab is always
computed in fp32, also inside a mixed-precision autocast region: kornia does not support
half precision for Lab, and the cube root loses too much in bf16.

Ranges: L in [0, 100]; over all 8-bit sRGB colours a in [-86.2, 98.2], b in [-107.9, 94.5].
The networks see the normalised values of richzhang/colorization-pytorch:
``l_norm = (L - L_CENTER) / L_NORM`` in [-0.5, 0.5] and ``ab_norm = ab / AB_NORM`` in ~[-1, 1].
"""

from __future__ import annotations

import kornia.color
import torch
from torch import Tensor

L_CENTER = 50.0
L_NORM = 100.0
AB_NORM = 110.0
# Zhang et al. drop images "whose ab is nearly zero everywhere": grayscale photographs stored as
# RGB carry no colour to learn from. An image is gray when no pixel has chroma above this.
GRAY_CHROMA = 5.0


def _check_channels(x: Tensor, channels: int, name: str) -> None:
    if x.dim() < 3 or x.shape[-3] != channels:
        raise ValueError(f"{name} must have shape (*, {channels}, H, W). Got {tuple(x.shape)}")


def _at_least_fp32(x: Tensor) -> Tensor:
    return x if x.dtype == torch.float64 else x.float()  # float64 stays (gradcheck); the rest computes in fp32


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1], shape (*, 3, H, W) -> Lab in Lab units, same shape, fp32 (float64 for float64 input).

    Example:
        >>> rgb_to_lab(torch.ones(1, 3, 2, 2))[0, :, 0, 0].round()
        tensor([100.,  -0.,   0.])
    """
    _check_channels(rgb, 3, "rgb")
    with torch.autocast(device_type=rgb.device.type, enabled=False):
        return kornia.color.rgb_to_lab(_at_least_fp32(rgb).clamp(0.0, 1.0))


def lab_to_rgb(lab: Tensor) -> Tensor:
    """Lab (*, 3, H, W) in Lab units -> sRGB in [0, 1], fp32 (float64 for float64 input), out-of-gamut
    values clipped."""
    _check_channels(lab, 3, "lab")
    with torch.autocast(device_type=lab.device.type, enabled=False):
        return kornia.color.lab_to_rgb(_at_least_fp32(lab), clip=True)


def uint8_to_lab(rgb_u8: Tensor) -> Tensor:
    """uint8 sRGB (*, 3, H, W) in [0, 255] -> Lab (*, 3, H, W), fp32."""
    return rgb_to_lab(rgb_u8.float() / 255.0)


def lab_to_uint8(lab: Tensor) -> Tensor:
    """Lab (*, 3, H, W) -> uint8 sRGB (*, 3, H, W), rounded as an 8-bit image file would be."""
    return (lab_to_rgb(lab) * 255.0).round().to(torch.uint8)


def normalize_lab(lab: Tensor) -> tuple[Tensor, Tensor]:
    """Lab (B, 3, H, W) -> (l_norm (B, 1, H, W) in [-0.5, 0.5], ab_norm (B, 2, H, W) in ~[-1, 1])."""
    _check_channels(lab, 3, "lab")
    return (lab[:, :1] - L_CENTER) / L_NORM, lab[:, 1:] / AB_NORM


def denormalize_lab(l_norm: Tensor, ab_norm: Tensor) -> Tensor:
    """Inverse of :func:`normalize_lab`: (B, 1, H, W) and (B, 2, H, W) -> Lab (B, 3, H, W)."""
    return torch.cat([l_norm.float() * L_NORM + L_CENTER, ab_norm.float() * AB_NORM], dim=1)


def gray_to_rgb(l_norm: Tensor) -> Tensor:
    """l_norm (B, 1, H, W) -> the gray sRGB image with that lightness, (B, 3, H, W) in [0, 1]."""
    return lab_to_rgb(denormalize_lab(l_norm, torch.zeros_like(l_norm).expand(-1, 2, -1, -1)))


def is_gray(ab: Tensor, threshold: float = GRAY_CHROMA) -> Tensor:
    """Which images of a batch are grayscale: ab (B, 2, H, W) in Lab units -> bool (B,).

    Gray means every pixel's chroma sqrt(a^2 + b^2) is below ``threshold`` Lab units. (Zhang's
    released code tests the ab range instead, which also drops flat single-colour images.)
    """
    _check_channels(ab, 2, "ab")
    return ab.float().pow(2).sum(dim=1).flatten(1).amax(dim=1).sqrt() < threshold
