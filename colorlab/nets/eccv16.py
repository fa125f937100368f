"""Zhang et al. 2016's network ("Colorful Image Colorization", ECCV): 8 conv blocks, no pooling,
downsampling by strided convs, a dilated middle, one transposed-conv upsampling; output at 1/4."""

from __future__ import annotations

from torch import Tensor, nn

from colorlab.nets.layers import check_input_size


def zhang_block(in_channels: int, out_channels: int, n_convs: int, stride_last: int = 1, dilation: int = 1,
                norm: bool = True) -> nn.Sequential:
    """n_convs 3x3 conv + ReLU (the last one strided), then BatchNorm, as in the released model."""
    layers = []
    for i in range(n_convs):
        stride = stride_last if i == n_convs - 1 else 1
        layers += [nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, stride, dilation, dilation),
                   nn.ReLU(inplace=True)]
    if norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


class ECCV16(nn.Module):
    """L (B, in_channels, H, W) -> maps (B, out_channels, H/4, W/4).

    ``width`` 64 is the paper's size (conv1 64 ... conv4-7 512 channels, 32 M parameters with 313
    outputs); 16 runs on a laptop CPU.
    """

    def __init__(self, out_channels: int, in_channels: int = 1, width: int = 64):
        super().__init__()
        w = [width * m for m in (1, 2, 4, 8)]
        self.output_stride, self.size_multiple = 4, 8
        self.model1 = zhang_block(in_channels, w[0], 2, stride_last=2)
        self.model2 = zhang_block(w[0], w[1], 2, stride_last=2)
        self.model3 = zhang_block(w[1], w[2], 3, stride_last=2)
        self.model4 = zhang_block(w[2], w[3], 3)
        self.model5 = zhang_block(w[3], w[3], 3, dilation=2)
        self.model6 = zhang_block(w[3], w[3], 3, dilation=2)
        self.model7 = zhang_block(w[3], w[3], 3)
        self.model8 = nn.Sequential(
            nn.ConvTranspose2d(w[3], w[2], kernel_size=4, stride=2, padding=1), nn.ReLU(inplace=True),
            zhang_block(w[2], w[2], 2, norm=False))
        self.head = nn.Conv2d(w[2], out_channels, kernel_size=1)

    def forward(self, l: Tensor) -> Tensor:
        check_input_size(l, self.size_multiple, "eccv16")
        x = l
        for block in (self.model1, self.model2, self.model3, self.model4, self.model5, self.model6,
                      self.model7, self.model8):
            x = block(x)
        return self.head(x)
