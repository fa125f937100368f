"""Layers shared by the network families."""

from __future__ import annotations

from torch import Tensor, nn


class ConvNormAct(nn.Sequential):
    """3x3 (or k x k) convolution -> BatchNorm -> ReLU, 'same' padding for stride 1."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1,
                 kernel_size: int = 3):
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


def check_input_size(x: Tensor, multiple: int, net: str) -> None:
    """Raise a clear error when the spatial size is not a multiple the network can take."""
    h, w = x.shape[-2:]
    if h % multiple or w % multiple:
        raise ValueError(f"{net} needs height and width that are multiples of {multiple}. "
                         f"Got {h}x{w}; crop or resize to e.g. {h // multiple * multiple or multiple}x"
                         f"{w // multiple * multiple or multiple}")
