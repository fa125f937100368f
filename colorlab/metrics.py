"""The field's colorization metrics, as plain functions and as DDP-safe torchmetrics states.

Conventions: ``ab`` in Lab units (B, 2, H, W); ``rgb`` in [0, 1] (B, 3, H, W).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from colorlab.bins import gamut_centers, hard_encode, rebalance_weights
from colorlab.color import lab_to_uint8

AUC_MAX_THRESHOLD = 150  # Zhang et al. 2016: ab error thresholds 0, 1, ..., 150
SSIM_MIN_SIDE = 11  # SSIM's Gaussian window; smaller images get no SSIM
MEAN_METRICS = ("ab_error", "ab_error_gray", "colorfulness", "colorfulness_true", "chroma", "chroma_bimodal",
                "chroma_bimodal_true")
# every name ColorMetrics.compute() can return (after its prefix); ssim, chroma_bimodal* and auc_rebalanced
# only for large enough images, data with bimodal masks and a model with a prior
METRIC_NAMES = (*MEAN_METRICS, "delta_cf", "psnr", "ssim", "auc", "auc_per_bin", "auc_rebalanced")


def chroma(ab: Tensor) -> Tensor:
    """ab (B, 2, H, W) -> chroma sqrt(a^2 + b^2) (B, H, W), Lab units."""
    return ab.float().pow(2).sum(dim=1).sqrt()


def ab_error(ab_pred: Tensor, ab_true: Tensor) -> Tensor:
    """Per-pixel Euclidean ab error, (B, H, W), Lab units."""
    return chroma(ab_pred - ab_true)


def colorfulness(rgb: Tensor) -> Tensor:
    """Hasler and Suesstrunk (2003) colourfulness M of each image: rgb (B, 3, H, W) in [0, 1] -> (B,).

    rg = R - G, yb = (R + G) / 2 - B on the 0..255 scale;
    M = sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2).
    """
    r, g, b = (rgb.float() * 255.0).unbind(dim=1)
    rg, yb = (r - g).flatten(1), (0.5 * (r + g) - b).flatten(1)
    spread = (rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False)).sqrt()
    offset = (rg.mean(dim=1).pow(2) + yb.mean(dim=1).pow(2)).sqrt()
    return spread + 0.3 * offset


class ErrorCurveAuC(Metric):
    """Area under the cumulative per-pixel ab error curve (Zhang et al. 2016), raw and rebalanced.

    For thresholds t = 0, 1, ..., 150 (Lab units), the curve is the fraction of pixels whose ab
    error is <= t. ``auc`` is its mean over the 151 thresholds, in [0, 1] (1: every pixel exact; a
    constant error d gives (150 - ceil(d) + 1) / 151). The paper integrates the curve over [0, 150]
    and divides by 150 instead; for a curve that rises from c(0) to c(150) = 1 the trapezoid integral
    exceeds the 151-point mean by (auc - 1/2 - c(0)/2) / 150 (about 0.003 at auc = 0.95): see
    docs/reference.md for the difference measured on the embedded data.

    ``auc_rebalanced`` is Zhang's class-rebalanced AuC: each pixel weighted by the inverse of the
    *training* prior ``prior`` (Q,) at its ground-truth bin (Eq. 4 with λ = 0), normalised so that the
    weights' expectation under the prior is 1; the curve is the weighted fraction of pixels within t.
    Pixels whose bin has prior 0 (colours never seen in training) get weight 0. Without a prior (None,
    or all zeros: a checkpoint that holds none) it is left out.
    ``auc_per_bin`` (colorlab's own per-bin AuC) averages the curves of the ground-truth bins
    of the *evaluated* images with equal weight, so a bin with a handful of pixels counts as much as
    the sky. States are per-bin histograms, summed across DDP ranks.
    """

    full_state_update = False

    def __init__(self, prior: Tensor | None = None, **kwargs):
        super().__init__(**kwargs)
        self.register_buffer("centers", gamut_centers(), persistent=False)
        n_bins, n_steps = len(self.centers), AUC_MAX_THRESHOLD + 2  # last column: error > 150
        if prior is not None and prior.shape != (n_bins,):
            raise ValueError(f"the AuC's prior must have shape ({n_bins},) (Zhang's in-gamut bins). "
                             f"Got {tuple(prior.shape)}")
        self.register_buffer("prior", torch.zeros(n_bins, dtype=torch.float64) if prior is None else prior.double())
        self.add_state("histogram", torch.zeros(n_bins, n_steps, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, ab_pred: Tensor, ab_true: Tensor) -> None:
        # the first threshold an error is within; 1e-4 absorbs float rounding of exact distances
        error_step = (ab_error(ab_pred, ab_true) - 1e-4).ceil().clamp(0, AUC_MAX_THRESHOLD + 1).long().flatten()
        true_bin = hard_encode(ab_true.float(), self.centers.to(ab_true.device)).flatten()
        n_steps = self.histogram.shape[1]
        counts = torch.bincount(true_bin * n_steps + error_step, minlength=self.histogram.numel())
        self.histogram += counts.view_as(self.histogram).to(self.histogram.dtype)

    def compute(self) -> dict[str, Tensor]:
        cumulative = self.histogram.cumsum(dim=1)[:, : AUC_MAX_THRESHOLD + 1]  # (Q, 151): error <= t
        totals = self.histogram.sum(dim=1)
        raw = (cumulative.sum(dim=0) / totals.sum().clamp_min(1)).mean()
        seen = totals > 0
        per_bin = (cumulative[seen] / totals[seen, None]).mean(dim=0).mean()
        out = {"auc": raw.float(), "auc_per_bin": per_bin.float()}
        if self.prior.sum() > 0:
            weights = rebalance_weights(self.prior, 0.0).nan_to_num(posinf=0.0)  # 1/p, E_p[w] = 1; p = 0: 0
            curve = (weights[:, None] * cumulative).sum(dim=0) / (weights * totals).sum().clamp_min(1e-12)
            out["auc_rebalanced"] = curve.mean().float()
        return out


class ColorMetrics(nn.Module):
    """Validation metrics accumulated over batches and synchronised across DDP ranks.

    update(lab_pred, lab_true, bimodal=None): Lab (B, 3, H, W) of prediction and truth (same L);
    ``bimodal`` (B, 1, H, W) bool marks the synthetic data's two-colour shapes. ``prior`` (313,): the
    training data's ab prior, for ``auc_rebalanced`` (see ErrorCurveAuC).
    """

    def __init__(self, prior: Tensor | None = None):
        super().__init__()
        self.psnr = PeakSignalNoiseRatio(data_range=255.0, reduction="elementwise_mean", dim=(1, 2, 3))
        self.ssim = StructuralSimilarityIndexMeasure(data_range=255.0)  # 11x11 Gaussian window
        self.auc = ErrorCurveAuC(prior)
        self.means = nn.ModuleDict({name: MeanMetric() for name in MEAN_METRICS})
        self.has_bimodal = self.has_ssim = False

    @torch.no_grad()
    def update(self, lab_pred: Tensor, lab_true: Tensor, bimodal: Tensor | None = None) -> None:
        ab_pred, ab_true = lab_pred[:, 1:], lab_true[:, 1:]
        rgb_pred, rgb_true = lab_to_uint8(lab_pred), lab_to_uint8(lab_true)
        self.psnr.update(rgb_pred.float(), rgb_true.float())  # PSNR on 8-bit RGB, as in Zhang 2017
        if min(rgb_true.shape[-2:]) >= SSIM_MIN_SIDE:
            self.has_ssim = True
            self.ssim.update(rgb_pred.float(), rgb_true.float())
        self.auc.update(ab_pred, ab_true)
        m = self.means
        m["ab_error"].update(ab_error(ab_pred, ab_true))
        m["ab_error_gray"].update(chroma(ab_true))  # the error of predicting ab = 0
        m["colorfulness"].update(colorfulness(rgb_pred / 255.0))
        m["colorfulness_true"].update(colorfulness(rgb_true / 255.0))
        m["chroma"].update(chroma(ab_pred))
        if bimodal is not None:
            self.has_bimodal = True
            weight = bimodal[:, 0].float()
            m["chroma_bimodal"].update(chroma(ab_pred), weight)
            m["chroma_bimodal_true"].update(chroma(ab_true), weight)

    def compute(self, prefix: str = "val/") -> dict[str, Tensor]:
        skip = set() if self.has_bimodal else {"chroma_bimodal", "chroma_bimodal_true"}
        out = {f"{prefix}{name}": metric.compute() for name, metric in self.means.items() if name not in skip}
        # DDColor's ΔCF: |CF(pred) - CF(real)| of the two sets' mean colourfulness
        out[f"{prefix}delta_cf"] = (out[f"{prefix}colorfulness"] - out[f"{prefix}colorfulness_true"]).abs()
        out[f"{prefix}psnr"] = self.psnr.compute()
        if self.has_ssim:
            out[f"{prefix}ssim"] = self.ssim.compute()
        out.update({f"{prefix}{k}": v for k, v in self.auc.compute().items()})
        return out

    def reset(self) -> None:
        self.psnr.reset()
        self.ssim.reset()
        self.auc.reset()
        for metric in self.means.values():
            metric.reset()
