"""Measurements of the released code's choices on the embedded validation scenes (figures in docs/reference.md).

1. Blended targets: for the loss below full resolution, the share of targets whose bin (the one that sets
   the rebalancing weight) no pixel of their block occupies, and the share of the total rebalancing weight
   they carry, under each ``model.target_sampling`` and ``model.rebalance_uniform``, for eccv16_full's
   settings (313 bins, soft targets, stride 4) and unet_bins' (32 frequent bins, closest bin, stride 2).
2. Raw AuC: colorlab's mean over the 151 thresholds 0..150 against the paper's integral over [0, 150]
   (trapezoid over the same integer thresholds, and the exact integral of the step curve), for the gray
   prediction (ab = 0) and for the checkpoints given on the command line.

    python scripts/reference_measurements.py [--auc-only] [CKPT ...]   # a few minutes on 2 cores
"""

from __future__ import annotations

import sys
import tempfile

import torch

from colorlab.bins import REBALANCE_UNIFORMS, TARGET_SAMPLINGS, block_average, hard_encode
from colorlab.color import AB_NORM, is_gray
from colorlab.config import compose
from colorlab.data import ColorDataModule, add_lab
from colorlab.data.prior import load_or_compute_prior
from colorlab.metrics import AUC_MAX_THRESHOLD, ab_error
from colorlab.models import build_model, load_colorizer
from colorlab.models.bins import hard_targets


def validation_ab(cfg) -> list[torch.Tensor]:
    """The validation scenes' ab_norm batches (B, 2, H, W), gray images left out as the prior does."""
    datamodule = ColorDataModule(seed=cfg.seed, **{**dict(cfg.data), "num_workers": 0})
    datamodule.setup("validate")
    batches = []
    for batch in datamodule.val_dataloader():
        ab = add_lab(batch)["ab"]
        batches.append(ab[~is_gray(ab * AB_NORM)])
    return batches


@torch.no_grad()
def blended_shares(experiment: str, cache_dir: str) -> list[str]:
    rows = []
    for uniform in REBALANCE_UNIFORMS:
        for sampling in TARGET_SAMPLINGS:
            cfg = compose(experiment, [f"prior.cache_dir={cache_dir}", f"model.target_sampling={sampling}",
                                       f"model.rebalance_uniform={uniform}", "data.num_workers=0"])
            model = build_model(cfg, load_or_compute_prior(cfg)["counts"])
            blended = total = weight_blended = weight_total = unseen = 0.0
            for ab in validation_ab(cfg):
                h, w = ab.shape[-2:]
                size = (h // model.loss_stride, w // model.loss_stride)
                most_likely = model.targets(ab, size)[2]  # (B, h', w'): the bin that sets the weight
                pixels = hard_targets(hard_encode(ab * AB_NORM, model.centers))  # each pixel's own bin
                occupied = block_average(*pixels, len(model.centers), size) > 0  # (B, Q, h', w')
                is_blend = ~occupied.gather(1, most_likely[:, None])[:, 0]
                weight = model.weights[most_likely].double()
                blended += float(is_blend.sum())
                total += is_blend.numel()
                weight_blended += float(weight[is_blend].sum())
                weight_total += float(weight.sum())
                unseen += float((model.prior[most_likely] == 0).sum())
            rows.append(f"| {experiment} | {uniform} | {sampling} | {100 * blended / total:.1f}% | "
                        f"{100 * unseen / total:.1f}% | {100 * weight_blended / weight_total:.1f}% | "
                        f"{weight_total / total:.2f} |")
    return rows


def auc_variants(errors: torch.Tensor) -> tuple[float, float, float]:
    """Per-pixel ab errors (N,) -> (colorlab's 151-point mean, trapezoid integral / 150, exact integral / 150)."""
    thresholds = torch.arange(AUC_MAX_THRESHOLD + 1, dtype=torch.float64)
    steps = (errors.double() - 1e-4).ceil().clamp(0, AUC_MAX_THRESHOLD + 1)  # as colorlab.metrics
    curve = torch.stack([(steps <= t).double().mean() for t in thresholds])  # fraction within t
    trapezoid = float(torch.trapezoid(curve, thresholds)) / AUC_MAX_THRESHOLD
    exact = 1 - float(errors.double().clamp(max=AUC_MAX_THRESHOLD).mean()) / AUC_MAX_THRESHOLD
    return float(curve.mean()), trapezoid, exact


@torch.no_grad()
def auc_rows(checkpoints: list[str]) -> list[str]:
    cfg = compose("unet_bins", [])
    errors = {"gray (ab = 0)": [ab_error(torch.zeros_like(ab), ab).flatten() * AB_NORM for ab in validation_ab(cfg)]}
    datamodule = ColorDataModule(seed=cfg.seed, **{**dict(cfg.data), "num_workers": 0})
    datamodule.setup("validate")
    for path in checkpoints:
        model = load_colorizer(path)
        errors[path] = []
        for batch in datamodule.val_dataloader():
            batch = add_lab(batch)
            ab_pred = model.predict_ab(model.run_net(batch), batch["l"].shape[-2:])
            errors[path].append(ab_error(ab_pred, batch["ab"]).flatten() * AB_NORM)
    rows = []
    for name, parts in errors.items():
        mean, trapezoid, exact = auc_variants(torch.cat(parts))
        rows.append(f"| {name} | {mean:.4f} | {trapezoid:.4f} | {exact:.4f} | {mean - trapezoid:+.4f} |")
    return rows


def main(argv: list[str]) -> int:
    if "--auc-only" not in argv:
        blends_table()
    auc_table([a for a in argv if a != "--auc-only"])
    return 0


def blends_table() -> None:
    print("| settings | rebalance_uniform | target_sampling | blended targets | in bins of prior 0 | "
          "weight on blended targets | mean weight per target |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache_dir:
        for experiment in ("eccv16_full", "unet_bins"):
            print("\n".join(blended_shares(experiment, cache_dir)))


def auc_table(checkpoints: list[str]) -> None:
    print("\n| prediction | AuC, 151-point mean (colorlab) | trapezoid / 150 | exact integral / 150 "
          "| mean - trapezoid |")
    print("|---|---|---|---|---|")
    print("\n".join(auc_rows(checkpoints)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
