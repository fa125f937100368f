"""Regression on ab (seed 001's regression approach): MSE, L1 or Huber on normalised ab.

Optionally with a bins head (Zhang et al. 2017): the network also predicts a distribution over the
313 in-gamut ab bins, trained with cross-entropy on each pixel's nearest bin. Decoding still uses
the regression output; the distribution gives palettes at a point and per-pixel uncertainty.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from colorlab.bins import block_average, block_colors, gamut_centers, hard_encode
from colorlab.color import AB_NORM
from colorlab.models.base import Colorizer
from colorlab.models.bins import check_target_sampling, hard_targets, resize_to

LOSSES = ("mse", "l1", "huber")


class RegressionColorizer(Colorizer):
    """The network's first 2 maps pass through tanh: ab_norm in [-1, 1] (ab / AB_NORM); with
    ``bins_head`` the next ``bins_features`` maps feed a 1x1 conv to logits over the 313 in-gamut bins.

    The 1x1 conv is applied after pooling to the loss resolution: pooling and a 1x1 conv commute,
    so this is the same head as 313 output maps of the network, at a fraction of the cost (the
    networks' own heads are 1x1 convs of at most 64 features, so 32+ features lose nothing there).
    Its targets are one per block of ``bins_stride`` x ``bins_stride`` output pixels (``target_sampling``).
    """

    def __init__(self, net, optim: dict, loss: str = "mse", huber_beta: float = 0.1, bins_head: bool = False,
                 bins_features: int = 32, bins_weight: float = 0.01, bins_stride: int = 2,
                 target_sampling: str = "subsample", n_samples: int = 8, data_prior: Tensor | None = None):
        super().__init__(net, optim, n_samples, data_prior)
        check_target_sampling(target_sampling)
        self.target_sampling = target_sampling
        if loss not in LOSSES:
            raise ValueError(f"model.loss must be one of {LOSSES}. Got {loss!r}")
        if bins_stride < 1:
            raise ValueError(f"model.bins_stride must be >= 1. Got {bins_stride}")
        self.loss_name, self.huber_beta = loss, huber_beta
        self.bins_head, self.bins_weight, self.bins_stride = bins_head, bins_weight, bins_stride
        if bins_head:
            self.register_buffer("centers", gamut_centers())
            self.bins_logits = torch.nn.Conv2d(bins_features, len(self.centers), kernel_size=1)

    @classmethod
    def net_out_channels(cls, bins_head: bool = False, bins_features: int = 32, **_) -> int:
        return 2 + (bins_features if bins_head else 0)

    def decode(self, out: Tensor) -> Tensor:
        return torch.tanh(out[:, :2].float())

    def loss(self, out: Tensor, batch: dict) -> Tensor:
        ab_pred = self.predict_ab(out, batch["ab"].shape[-2:])
        if self.loss_name == "mse":
            loss = F.mse_loss(ab_pred, batch["ab"])
        elif self.loss_name == "l1":
            loss = F.l1_loss(ab_pred, batch["ab"])
        else:  # huber_beta is in normalised ab units: 0.1 = 11 Lab units
            loss = F.smooth_l1_loss(ab_pred, batch["ab"], beta=self.huber_beta)
        if self.bins_head:
            h, w = out.shape[-2:]
            size = (h // self.bins_stride, w // self.bins_stride)
            logits = self.bins_logits(resize_to(out[:, 2:].float(), size))  # (B, 313, h', w')
            if self.target_sampling == "average_encodings":  # the block's distribution of nearest bins
                nearest = hard_targets(hard_encode(batch["ab"] * AB_NORM, self.centers))
                target = block_average(*nearest, len(self.centers), size)  # (B, 313, h', w')
                cross_entropy = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
            else:
                nearest = hard_encode(block_colors(batch["ab"], size, self.target_sampling) * AB_NORM, self.centers)
                cross_entropy = F.cross_entropy(logits, nearest)  # nearest (B, h', w')
            loss = loss + self.bins_weight * cross_entropy
        return loss

    @property
    def predicts_distribution(self) -> bool:
        return self.bins_head

    def ab_distribution(self, out: Tensor) -> tuple[Tensor, Tensor] | None:
        return (self.bins_logits(out[:, 2:].float()).softmax(dim=1), self.centers) if self.bins_head else None
