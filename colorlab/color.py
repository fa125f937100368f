"""CIE Lab colour conversion and normalisation, on whatever device the tensors live.

The conversion is kornia's ``rgb_to_lab`` / ``lab_to_rgb`` (a port of scikit-image's ``rgb2lab``, sRGB,
D65), op for op, with its constants made once per device: kornia builds its matrices and white point
with ``torch.tensor(..., device=...)`` on every call, a copy from the host that on a GPU waits for
everything queued, several times per training step. On the CPU the result is kornia's bit for bit
(the 3 x 3 colour matrix by the same einsum); on other devices the matrix is applied elementwise, where
kornia's 1 x 1 convolution may run in TF32. Lab is always computed in fp32 (float64 stays), also inside
a mixed-precision autocast region: the cube root loses too much in bf16.

Ranges: L in [0, 100]; over all 8-bit sRGB colours a in [-86.2, 98.2], b in [-107.9, 94.5].
The networks see the normalised values of richzhang/colorization-pytorch:
``l_norm = (L - L_CENTER) / L_NORM`` in [-0.5, 0.5] and ``ab_norm = ab / AB_NORM`` in ~[-1, 1].
"""

from __future__ import annotations

import functools

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


# kornia.color's constants: linear sRGB <-> XYZ (D65) and the D65 white point
_CONSTANTS = {
    "rgb_to_xyz": ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227)),
    "xyz_to_rgb": ((3.2404813432005266, -1.5371515162713185, -0.4985363261688878),
                   (-0.9692549499965682, 1.8759900014898907, 0.0415559265582928),
                   (0.0556466391351772, -0.2040413383665112, 1.0573110696453443)),
    "white": (0.95047, 1.0, 1.08883),
}


@functools.lru_cache(maxsize=64)  # a few constants x devices x dtypes
def device_constant(make, *args, device: torch.device, dtype: torch.dtype | None = None) -> Tensor:
    """``make(*args)`` (host data: nested sequences or an array) as a tensor on ``device``, made once per
    arguments: copied from the host per call, it would make the host wait for the device's queue each time.
    Made outside inference mode (validation's, where it is often first needed): autograd may save it later."""
    with torch.inference_mode(False):
        return torch.as_tensor(make(*args), dtype=dtype).to(device)


def _constant(name: str, like: Tensor) -> Tensor:
    """``_CONSTANTS[name]`` on like's device in its dtype."""
    return device_constant(_CONSTANTS.__getitem__, name, device=like.device, dtype=like.dtype)


def _mix(image: Tensor, name: str) -> Tensor:
    """The 3 x 3 matrix ``name`` applied to the channels of image (*, 3, H, W): kornia's einsum on the CPU;
    elsewhere elementwise, which no TF32 setting touches."""
    kernel = _constant(name, image)
    if image.device.type == "cpu":
        return torch.einsum("oi, ...ihw -> ...ohw", kernel, image).contiguous()
    return _mix_elementwise(image, kernel)


def _mix_elementwise(image: Tensor, kernel: Tensor) -> Tensor:
    channels = image[..., 0, :, :], image[..., 1, :, :], image[..., 2, :, :]  # three multiply-adds per output
    return torch.stack([sum(kernel[o, i] * channels[i] for i in range(3)) for o in range(3)], dim=-3)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """sRGB in [0, 1], shape (*, 3, H, W) -> Lab in Lab units, same shape, fp32 (float64 for float64 input).

    Example:
        >>> rgb_to_lab(torch.ones(1, 3, 2, 2))[0, :, 0, 0].round()
        tensor([100.,  -0.,   0.])
    """
    _check_channels(rgb, 3, "rgb")
    with torch.autocast(device_type=rgb.device.type, enabled=False):
        image = _at_least_fp32(rgb).clamp(0.0, 1.0)
        linear = torch.where(image > 0.04045, torch.pow((image + 0.055).clamp(min=0.0) / 1.055, 2.4), image / 12.92)
        xyz = torch.div(_mix(linear, "rgb_to_xyz"), _constant("white", image)[:, None, None])
        f = torch.where(xyz > 0.008856, torch.pow(xyz.clamp(min=0.008856), 1 / 3.0), 7.787 * xyz + 4.0 / 29.0)
        x, y, z = f[..., 0, :, :], f[..., 1, :, :], f[..., 2, :, :]
        return torch.stack([116.0 * y - 16.0, 500.0 * (x - y), 200.0 * (y - z)], dim=-3)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """Lab (*, 3, H, W) in Lab units -> sRGB in [0, 1], fp32 (float64 for float64 input), out-of-gamut
    values clipped."""
    _check_channels(lab, 3, "lab")
    with torch.autocast(device_type=lab.device.type, enabled=False):
        lab = _at_least_fp32(lab)
        fy = (lab[..., 0, :, :] + 16.0) / 116.0
        fx = lab[..., 1, :, :] / 500.0 + fy
        fz = (fy - lab[..., 2, :, :] / 200.0).clamp(min=0.0)  # out of range: Z < 0
        f = torch.stack([fx, fy, fz], dim=-3)
        xyz = torch.where(f > 0.2068966, torch.pow(f, 3.0), (f - 4.0 / 29.0) / 7.787)
        linear = _mix(xyz * _constant("white", lab)[:, None, None], "xyz_to_rgb")
        rgb = torch.where(linear > 0.0031308, 1.055 * torch.pow(linear.clamp(min=0.0031308), 1 / 2.4) - 0.055,
                          12.92 * linear)
        return rgb.clamp(0.0, 1.0)


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
