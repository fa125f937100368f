"""The siggraph17 formulation's loss: colorization-pytorch's 10 x L1 (summed over a and b) + 1 x cross-entropy
on the nearest grid bin of each 4x4 block's top-left pixel, written out independently here."""

import torch
import torch.nn.functional as F

from colorlab.config import compose
from colorlab.models import build_model, placeholder_prior


def test_loss_is_the_released_weighting_of_l1_and_grid_cross_entropy(tmp_path):
    cfg = compose("siggraph17", [f"run_dir={tmp_path}"])
    model = build_model(cfg, placeholder_prior(cfg))
    generator = torch.Generator().manual_seed(0)
    ab = torch.rand(2, 2, 16, 16, generator=generator) * 1.6 - 0.8  # normalised ab
    reg, logits = torch.randn(2, 2, 16, 16, generator=generator), torch.randn(2, 529, 4, 4, generator=generator)
    l1 = 10 * (torch.tanh(reg) - ab).abs().sum(dim=1).mean()
    a, b = ((ab[:, :, ::4, ::4] * 110 + 110) / 10).round().long().unbind(dim=1)  # encode_ab_ind
    expected = l1 + F.cross_entropy(logits, a * 23 + b)
    assert torch.allclose(model.loss((reg, logits), {"ab": ab}), expected, atol=1e-5)
    probs, centers = model.ab_distribution((reg, logits))
    assert centers.shape == (529, 2) and torch.equal(centers[a[0, 0, 0] * 23 + b[0, 0, 0]],
                                                     (torch.stack([a[0, 0, 0], b[0, 0, 0]]) * 10 - 110).float())
