"""Independent transcriptions of Zhang's released generators (richzhang/colorization's colorizers/eccv16.py
and colorizers/siggraph17.py, colorization-pytorch's SIGGRAPHGenerator), with the release's module names,
so that their state dicts have the released keys. Inputs and outputs in Lab units, as the release's."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _convs(spec: list[tuple[int, int, int, int]], norm: int | None, relu_first: bool = False) -> nn.Sequential:
    """spec: (in, out, stride, dilation) 3x3 convs each followed by ReLU; then BatchNorm(norm) if given."""
    layers = [nn.ReLU(True)] if relu_first else []
    for cin, cout, stride, dilation in spec:
        layers += [nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=True), nn.ReLU(True)]
    if norm:
        layers.append(nn.BatchNorm2d(norm))
    return nn.Sequential(*layers)


class ECCVReference(nn.Module):
    def __init__(self):
        super().__init__()
        self.model1 = _convs([(1, 64, 1, 1), (64, 64, 2, 1)], 64)
        self.model2 = _convs([(64, 128, 1, 1), (128, 128, 2, 1)], 128)
        self.model3 = _convs([(128, 256, 1, 1), (256, 256, 1, 1), (256, 256, 2, 1)], 256)
        self.model4 = _convs([(256, 512, 1, 1), (512, 512, 1, 1), (512, 512, 1, 1)], 512)
        self.model5 = _convs([(512, 512, 1, 2)] * 3, 512)
        self.model6 = _convs([(512, 512, 1, 2)] * 3, 512)
        self.model7 = _convs([(512, 512, 1, 1)] * 3, 512)
        self.model8 = nn.Sequential(nn.ConvTranspose2d(512, 256, 4, 2, 1), nn.ReLU(True),
                                    nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(True),
                                    nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(True),
                                    nn.Conv2d(256, 313, 1, 1, 0))
        self.model_out = nn.Conv2d(313, 2, 1, bias=False)

    def forward(self, l: torch.Tensor) -> torch.Tensor:
        """L (B, 1, H, W) in [0, 100] -> ab (B, 2, H, W) in Lab units."""
        x = (l - 50.0) / 100.0
        for i in range(1, 9):
            x = getattr(self, f"model{i}")(x)
        ab = self.model_out(torch.softmax(x, dim=1)) * 110.0
        return F.interpolate(ab, scale_factor=4, mode="bilinear")


class SiggraphReference(nn.Module):
    def __init__(self, mask_cent: float = 0.0):
        super().__init__()
        self.mask_cent = mask_cent
        self.model1 = _convs([(4, 64, 1, 1), (64, 64, 1, 1)], 64)
        self.model2 = _convs([(64, 128, 1, 1), (128, 128, 1, 1)], 128)
        self.model3 = _convs([(128, 256, 1, 1), (256, 256, 1, 1), (256, 256, 1, 1)], 256)
        self.model4 = _convs([(256, 512, 1, 1), (512, 512, 1, 1), (512, 512, 1, 1)], 512)
        self.model5 = _convs([(512, 512, 1, 2)] * 3, 512)
        self.model6 = _convs([(512, 512, 1, 2)] * 3, 512)
        self.model7 = _convs([(512, 512, 1, 1)] * 3, 512)
        self.model8up = nn.Sequential(nn.ConvTranspose2d(512, 256, 4, 2, 1))
        self.model3short8 = nn.Sequential(nn.Conv2d(256, 256, 3, 1, 1))
        self.model8 = _convs([(256, 256, 1, 1)] * 2, 256, relu_first=True)
        self.model9up = nn.Sequential(nn.ConvTranspose2d(256, 128, 4, 2, 1))
        self.model2short9 = nn.Sequential(nn.Conv2d(128, 128, 3, 1, 1))
        self.model9 = _convs([(128, 128, 1, 1)], 128, relu_first=True)
        self.model10up = nn.Sequential(nn.ConvTranspose2d(128, 128, 4, 2, 1))
        self.model1short10 = nn.Sequential(nn.Conv2d(64, 128, 3, 1, 1))
        self.model10 = nn.Sequential(nn.ReLU(True), nn.Conv2d(128, 128, 3, 1, 1), nn.LeakyReLU(0.2))
        self.model_class = nn.Sequential(nn.Conv2d(256, 529, 1))
        self.model_out = nn.Sequential(nn.Conv2d(128, 2, 1), nn.Tanh())

    def forward(self, l: torch.Tensor, hint_ab: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """L (B, 1, H, W) in [0, 100], hint ab (B, 2, H, W) Lab units, mask (B, 1, H, W) in {0, 1} -> ab."""
        x = torch.cat([(l - 50.0) / 100.0, hint_ab / 110.0, mask - self.mask_cent], dim=1)
        conv1_2 = self.model1(x)
        conv2_2 = self.model2(conv1_2[:, :, ::2, ::2])
        conv3_3 = self.model3(conv2_2[:, :, ::2, ::2])
        conv4_3 = self.model4(conv3_3[:, :, ::2, ::2])
        conv7_3 = self.model7(self.model6(self.model5(conv4_3)))
        conv8_3 = self.model8(self.model8up(conv7_3) + self.model3short8(conv3_3))
        conv9_3 = self.model9(self.model9up(conv8_3) + self.model2short9(conv2_2))
        conv10_2 = self.model10(self.model10up(conv9_3) + self.model1short10(conv1_2))
        return self.model_out(conv10_2) * 110.0


def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Random weights everywhere, BatchNorm running statistics included; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=generator))
            elif tensor.dim() == 1:  # BatchNorm scale
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            else:  # conv weights at a scale that keeps activations of order 1 through 20 layers
                fan_in = tensor[0].numel() if not name.endswith("up.0.weight") and "model8.0" not in name \
                    else tensor.shape[0] * tensor.shape[2] * tensor.shape[3] / 4
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
    return module.eval()
