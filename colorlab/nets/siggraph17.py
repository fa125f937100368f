"""Zhang et al. 2017's user-guided generator ("Real-Time User-Guided Image Colorization with Learned
Deep Priors", SIGGRAPH): the ECCV16 trunk on L, hint ab and hint mask, three upsamplings with
shortcut adds from the encoder (conv3 -> 8, conv2 -> 9, conv1 -> 10), a class head at 1/4 and a
regression head at full resolution."""

from __future__ import annotations

from torch import Tensor, nn

from colorlab.nets.eccv16 import zhang_block
from colorlab.nets.layers import check_input_size

TRUNK_LOSSES = ("regression", "classification")


def relu_convs(channels: int, n_convs: int) -> nn.Sequential:
    """ReLU, then n_convs x (3x3 conv + ReLU), then BatchNorm: the decoder blocks after a shortcut add."""
    layers = [nn.ReLU(inplace=True)]
    for _ in range(n_convs):
        layers += [nn.Conv2d(channels, channels, 3, 1, 1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.BatchNorm2d(channels))


class SIGGRAPH17(nn.Module):
    """x (B, 4, H, W) = [L_norm, hint_ab_norm (2), hint_mask] -> (ab (B, 2, H, W) before the tanh, class
    logits (B, out_channels, H/4, W/4)).

    ``out_channels``: the class head's classes (529: the full 23 x 23 ab grid of step 10).
    ``mask_offset`` is subtracted from the mask channel: 0 for the released weights (mask 0/1),
    0.5 for colorization-pytorch's own trained checkpoints (its ``mask_cent``).
    ``trunk_loss``: which head's gradient reaches the trunk; the other head sees detached features
    (colorization-pytorch's ``classification`` switch: classification for the automatic stage,
    regression for the hints stage). ``width`` 64 is the paper's size (34 M parameters).
    """

    def __init__(self, out_channels: int = 529, in_channels: int = 4, width: int = 64, mask_offset: float = 0.0,
                 trunk_loss: str = "regression"):
        super().__init__()
        if in_channels != 4:
            raise ValueError(f"siggraph17 takes L, hint ab and hint mask (4 channels): set hints.enabled=true. "
                             f"Got {in_channels} input channels")
        if trunk_loss not in TRUNK_LOSSES:
            raise ValueError(f"net.trunk_loss must be one of {TRUNK_LOSSES}. Got {trunk_loss!r}")
        self.output_stride, self.size_multiple = 1, 8
        self.mask_offset, self.trunk_loss = mask_offset, trunk_loss
        w = [width * m for m in (1, 2, 4, 8)]
        # encoder: as ECCV16, but every block ends unstrided; the forward subsamples by 2 between blocks
        self.model1 = zhang_block(in_channels, w[0], 2)
        self.model2 = zhang_block(w[0], w[1], 2)
        self.model3 = zhang_block(w[1], w[2], 3)
        self.model4 = zhang_block(w[2], w[3], 3)
        self.model5 = zhang_block(w[3], w[3], 3, dilation=2)
        self.model6 = zhang_block(w[3], w[3], 3, dilation=2)
        self.model7 = zhang_block(w[3], w[3], 3)
        self.model8up = nn.ConvTranspose2d(w[3], w[2], kernel_size=4, stride=2, padding=1)
        self.model3short8 = nn.Conv2d(w[2], w[2], 3, 1, 1)
        self.model8 = relu_convs(w[2], 2)
        self.model9up = nn.ConvTranspose2d(w[2], w[1], kernel_size=4, stride=2, padding=1)
        self.model2short9 = nn.Conv2d(w[1], w[1], 3, 1, 1)
        self.model9 = relu_convs(w[1], 1)
        self.model10up = nn.ConvTranspose2d(w[1], w[1], kernel_size=4, stride=2, padding=1)
        self.model1short10 = nn.Conv2d(w[0], w[1], 3, 1, 1)
        self.model10 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(w[1], w[1], 3, 1, 1), nn.LeakyReLU(0.2))
        self.model_class = nn.Conv2d(w[2], out_channels, kernel_size=1)
        self.model_out = nn.Conv2d(w[1], 2, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_input_size(x, self.size_multiple, "siggraph17")
        if self.mask_offset:
            x = shift_mask(x, self.mask_offset)
        conv1 = self.model1(x)  # (B, w, H, W)
        conv2 = self.model2(conv1[:, :, ::2, ::2])  # (B, 2w, H/2, W/2)
        conv3 = self.model3(conv2[:, :, ::2, ::2])  # (B, 4w, H/4, W/4)
        conv7 = self.model4(conv3[:, :, ::2, ::2])  # (B, 8w, H/8, W/8)
        for block in (self.model5, self.model6, self.model7):
            conv7 = block(conv7)
        conv8 = self.model8(self.model8up(conv7) + self.model3short8(conv3))  # (B, 4w, H/4, W/4)
        classify = self.trunk_loss == "classification"
        # the head that does not train the trunk sees detached features
        logits = self.model_class(conv8 if classify else conv8.detach())
        conv1, conv2, conv8 = (t.detach() for t in (conv1, conv2, conv8)) if classify else (conv1, conv2, conv8)
        conv9 = self.model9(self.model9up(conv8) + self.model2short9(conv2))  # (B, 2w, H/2, W/2)
        conv10 = self.model10(self.model10up(conv9) + self.model1short10(conv1))  # (B, 2w, H, W)
        return self.model_out(conv10), logits


def shift_mask(x: Tensor, offset: float) -> Tensor:
    """x (B, 4, H, W) with ``offset`` subtracted from its mask channel (the last)."""
    return x - x.new_tensor([0.0, 0.0, 0.0, offset])[None, :, None, None]
