"""The plain CNN of seed 001 / Zhang et al. 2016 at laptop size: no pooling, strided convs, BN."""

from __future__ import annotations

from torch import Tensor, nn

from colorlab.nets.layers import ConvNormAct, check_input_size


class PlainCNN(nn.Module):
    """L (B, in_channels, H, W) -> maps (B, out_channels, H / output_stride, W / output_stride).

    ``downsamples`` stride-2 blocks then ``dilated_blocks`` blocks at dilation 2 (wide receptive
    field without pooling); each block has ``depth`` conv-BN-ReLU layers. Channels double per
    downsampling, starting at ``width``.
    """

    def __init__(self, out_channels: int, in_channels: int = 1, width: int = 32, depth: int = 2,
                 downsamples: int = 2, dilated_blocks: int = 1):
        super().__init__()
        if depth < 1 or downsamples < 0 or dilated_blocks < 0:
            raise ValueError(f"need depth >= 1, downsamples >= 0, dilated_blocks >= 0. "
                             f"Got {depth}, {downsamples}, {dilated_blocks}")
        self.output_stride = self.size_multiple = 2**downsamples
        layers, channels = [], in_channels
        for block in range(downsamples + 1):
            block_width = width * 2**block
            for i in range(depth):
                stride = 2 if block > 0 and i == 0 else 1
                layers.append(ConvNormAct(channels, block_width, stride))
                channels = block_width
        for _ in range(dilated_blocks):
            layers += [ConvNormAct(channels, channels, dilation=2) for _ in range(depth)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(self, l: Tensor) -> Tensor:
        check_input_size(l, self.size_multiple, "plain")
        return self.head(self.body(l))
