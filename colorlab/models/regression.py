"""Regression on ab (seed 001's regression approach): MSE, L1 or Huber on normalised ab."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from colorlab.models.base import Colorizer

LOSSES = ("mse", "l1", "huber")


class RegressionColorizer(Colorizer):
    """The network's 2 maps pass through tanh: ab_norm in [-1, 1] (ab / AB_NORM)."""

    def __init__(self, net, optim: dict, loss: str = "mse", huber_beta: float = 0.1, n_samples: int = 8):
        super().__init__(net, optim, n_samples)
        if loss not in LOSSES:
            raise ValueError(f"model.loss must be one of {LOSSES}. Got {loss!r}")
        self.loss_name, self.huber_beta = loss, huber_beta

    @classmethod
    def net_out_channels(cls, **model_config) -> int:
        return 2

    def decode(self, out: Tensor) -> Tensor:
        return torch.tanh(out.float())

    def loss(self, out: Tensor, batch: dict) -> Tensor:
        ab_pred = self.predict_ab(out, batch["ab"].shape[-2:])
        if self.loss_name == "mse":
            return F.mse_loss(ab_pred, batch["ab"])
        if self.loss_name == "l1":
            return F.l1_loss(ab_pred, batch["ab"])
        # huber_beta is in normalised ab units: 0.1 = 11 Lab units
        return F.smooth_l1_loss(ab_pred, batch["ab"], beta=self.huber_beta)
