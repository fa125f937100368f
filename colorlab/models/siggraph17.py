"""Zhang et al. 2017's formulation (colorization-pytorch): a regression head on ab, trained with L1, and a
class head over the full 23 x 23 ab grid at 1/4 resolution, trained with cross-entropy on each block's
subsampled target. The regression gives the colours; the class distribution gives palettes at a point and
per-pixel uncertainty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from colorlab.color import AB_NORM
from colorlab.models.base import Colorizer

GRID_STEP, GRID_LIMIT = 10.0, 110.0  # colorization-pytorch's ab_quant and ab_max
GRID_SIDE = int(2 * GRID_LIMIT / GRID_STEP) + 1  # 23 values per axis, 529 classes


def grid_centers() -> Tensor:
    """The (529, 2) ab centres in Lab units, a-major: class a_index * 23 + b_index."""
    axis = torch.arange(GRID_SIDE, dtype=torch.float32) * GRID_STEP - GRID_LIMIT
    return torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).view(-1, 2)


def grid_index(ab_norm: Tensor) -> Tensor:
    """ab_norm (B, 2, h, w) -> the class of the nearest grid point (B, h, w) (colorization-pytorch: encode_ab_ind)."""
    idx = torch.round((ab_norm.float() * AB_NORM + GRID_LIMIT) / GRID_STEP).long().clamp(0, GRID_SIDE - 1)
    return idx[:, 0] * GRID_SIDE + idx[:, 1]


class Siggraph17Colorizer(Colorizer):
    """Network output: (ab before tanh (B, 2, H, W), class logits (B, 529, H/4, W/4)).

    Loss: ``regression_weight`` x the per-pixel L1 distance summed over a and b (normalised ab), plus
    ``classification_weight`` x the cross-entropy of the class head against the nearest grid point of
    the top-left pixel of each 4x4 block (colorization-pytorch: 10 x L1 + 1 x CE).
    """

    def __init__(self, net, optim: dict, classes: int = 529, regression_weight: float = 10.0,
                 classification_weight: float = 1.0, n_samples: int = 8, data_prior: Tensor | None = None):
        super().__init__(net, optim, n_samples, data_prior)
        if classes != GRID_SIDE**2:
            raise ValueError(f"model.classes must be {GRID_SIDE**2} (the 23 x 23 ab grid of step 10). Got {classes}")
        if regression_weight < 0 or classification_weight < 0:
            raise ValueError(f"model.regression_weight and model.classification_weight must be >= 0. Got "
                             f"{regression_weight}, {classification_weight}")
        self.regression_weight, self.classification_weight = regression_weight, classification_weight
        self.register_buffer("centers", grid_centers())

    @classmethod
    def net_out_channels(cls, classes: int = 529, **_) -> int:
        return classes

    def decode(self, out: tuple[Tensor, Tensor]) -> Tensor:
        return torch.tanh(out[0].float())

    def loss(self, out: tuple[Tensor, Tensor], batch: dict) -> Tensor:
        ab_pred = self.decode(out)  # (B, 2, H, W) at the input's resolution
        regression = (ab_pred - batch["ab"]).abs().sum(dim=1).mean()
        logits = out[1].float()
        stride = batch["ab"].shape[-1] // logits.shape[-1]
        target = grid_index(batch["ab"][:, :, ::stride, ::stride])  # (B, H/4, W/4)
        return self.regression_weight * regression + self.classification_weight * F.cross_entropy(logits, target)

    @property
    def predicts_distribution(self) -> bool:
        return True

    def ab_distribution(self, out: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        return out[1].float().softmax(dim=1), self.centers
