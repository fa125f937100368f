"""U-Net (seed 002): down groups of strided conv blocks, an upsampling path with skip connections."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorlab.nets.layers import ConvNormAct, check_input_size


class UNet(nn.Module):
    """L (B, in_channels, H, W) -> maps (B, out_channels, H / output_stride, W / output_stride).

    ``down_groups`` groups each halve the resolution (stride-2 conv, conv) and double the width;
    the decoder upsamples back, concatenating the encoder features of the ``skips`` resolutions
    just below the bottleneck (seed 002: 3 down groups, 2 skips), and stops at ``output_stride``
    (1: full resolution; 2 or 4 when the loss is computed at lower resolution anyway).
    """

    def __init__(self, out_channels: int, in_channels: int = 1, width: int = 16, down_groups: int = 3,
                 skips: int = 2, output_stride: int = 1):
        super().__init__()
        if down_groups < 1 or not 0 <= skips <= down_groups:
            raise ValueError(f"need down_groups >= 1 and 0 <= skips <= down_groups. Got {down_groups}, {skips}")
        if output_stride not in [2**i for i in range(down_groups)]:
            raise ValueError(f"output_stride must be a power of 2 below 2**down_groups. Got {output_stride}")
        self.output_stride, self.size_multiple = output_stride, 2**down_groups
        self.stop = stop = output_stride.bit_length() - 1  # the decoder's last level
        widths = [width * 2**i for i in range(down_groups + 1)]  # per resolution level
        self.stem = nn.Sequential(ConvNormAct(in_channels, widths[0]), ConvNormAct(widths[0], widths[0]))
        self.down = nn.ModuleList(
            nn.Sequential(ConvNormAct(widths[i], widths[i + 1], stride=2), ConvNormAct(widths[i + 1], widths[i + 1]))
            for i in range(down_groups))
        # the levels that receive a skip: the `skips` levels just above the bottleneck
        self.skip_levels = set(range(down_groups - skips, down_groups))
        self.up = nn.ModuleList(
            nn.Sequential(ConvNormAct(widths[i + 1] + (widths[i] if i in self.skip_levels else 0), widths[i]),
                          ConvNormAct(widths[i], widths[i]))
            for i in reversed(range(stop, down_groups)))
        self.head = nn.Conv2d(widths[stop], out_channels, kernel_size=1)

    def forward(self, l: Tensor) -> Tensor:
        check_input_size(l, self.size_multiple, "unet")
        features = [self.stem(l)]
        for block in self.down:
            features.append(block(features[-1]))
        x = features.pop()
        for level, block in zip(reversed(range(self.stop, len(features))), self.up, strict=True):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            if level in self.skip_levels:
                x = torch.cat([x, features[level]], dim=1)
            x = block(x)
        return self.head(x)
