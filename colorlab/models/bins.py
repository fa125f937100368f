"""Classification formulations: 1D bins (a and b separately, seed 001) and 2D ab bins
(313 in-gamut bins or the n most frequent, soft targets, class rebalancing, annealed mean)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor
from torchmetrics import MeanMetric

from colorlab.bins import (
    TARGET_SAMPLINGS,
    annealed_mean_1d,
    annealed_mean_logits,
    block_average,
    block_colors,
    centers_1d,
    encode_1d,
    entropy,
    expand_to_grid,
    fold_onto,
    frequent_centers,
    gamut_centers,
    grid_expansion,
    hard_encode,
    rebalance_weights,
    same_tensors,
    smooth_prior,
    soft_encode_sparse,
    tensor_stamp,
)
from colorlab.color import AB_NORM
from colorlab.metrics import chroma
from colorlab.models.base import Colorizer

BIN_SOURCES = ("gamut", "frequent")
FREQUENT_DECODES = ("grid", "kept")


def check_target_sampling(target_sampling: str) -> None:
    if target_sampling not in TARGET_SAMPLINGS:
        raise ValueError(f"model.target_sampling must be one of {TARGET_SAMPLINGS}. Got {target_sampling!r}")


def check_frequent_decode(frequent_decode: str) -> str:
    if frequent_decode not in FREQUENT_DECODES:
        raise ValueError(f"model.frequent_decode must be one of {FREQUENT_DECODES}. Got {frequent_decode!r}")
    return frequent_decode


def hard_targets(idx: Tensor) -> tuple[Tensor, Tensor]:
    """Class indices (B, H, W) as one-hot targets in sparse form: (indices (B, 1, H, W), weights 1)."""
    return idx[:, None], torch.ones(idx[:, None].shape, device=idx.device)


def resize_to(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Average-pool down by an integer factor, or bilinear up, to ``size``."""
    if x.shape[-2:] == size:
        return x
    if x.shape[-2] > size[0]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class BinsColorizer(Colorizer):
    """Shared by the bin formulations: decoding at a temperature, entropy and mode metrics."""

    def __init__(self, net, optim: dict, temperature: float, n_samples: int = 8, data_prior: Tensor | None = None):
        super().__init__(net, optim, n_samples, data_prior)
        if temperature < 0:
            raise ValueError(f"model.temperature must be >= 0 (0 decodes the mode). Got {temperature}")
        self.temperature = temperature
        self.bin_metrics = torch.nn.ModuleDict({"entropy": MeanMetric(), "chroma_bimodal_mode": MeanMetric()})
        self._has_bimodal = False

    def decode_at(self, out: Tensor, temperature: float) -> Tensor:
        """Network output -> ab_norm (B, 2, h, w) at a given temperature (0: mode, 1: mean)."""
        raise NotImplementedError

    def decode(self, out: Tensor) -> Tensor:
        return self.decode_at(out, self.temperature)

    @property
    def predicts_distribution(self) -> bool:
        return True

    def validation_extra(self, out: Tensor, batch: dict) -> None:
        self.bin_metrics["entropy"].update(self.pixel_entropy(out))
        if "bimodal" in batch:
            self._has_bimodal = True
            ab_mode = resize_to(self.decode_at(out, 0.0), batch["l"].shape[-2:]) * AB_NORM
            self.bin_metrics["chroma_bimodal_mode"].update(chroma(ab_mode), batch["bimodal"][:, 0].float())

    def on_validation_epoch_end(self) -> None:
        self.log("val/entropy", self.bin_metrics["entropy"].compute())
        if self._has_bimodal:
            self.log("val/chroma_bimodal_mode", self.bin_metrics["chroma_bimodal_mode"].compute())
        for metric in self.bin_metrics.values():
            metric.reset()
        super().on_validation_epoch_end()


class Bins1DColorizer(BinsColorizer):
    """a and b each classified into ``n_bins`` equal bins over [-110, 110]; cross-entropy per channel.

    Network output: (B, 2K, h, w), the K logits of a then the K logits of b; below full resolution the
    targets of each block follow ``target_sampling`` (colorlab.bins.TARGET_SAMPLINGS).
    """

    def __init__(self, net, optim: dict, n_bins: int = 20, temperature: float = 0.38,
                 target_sampling: str = "subsample", n_samples: int = 8, data_prior: Tensor | None = None):
        super().__init__(net, optim, temperature, n_samples, data_prior)
        check_target_sampling(target_sampling)
        self.n_bins, self.target_sampling = n_bins, target_sampling
        self.register_buffer("centers", centers_1d(n_bins))

    @classmethod
    def net_out_channels(cls, n_bins: int = 20, **_) -> int:
        return 2 * n_bins

    def _logits(self, out: Tensor) -> Tensor:
        b, _, h, w = out.shape
        return out.float().view(b, 2, self.n_bins, h, w)  # (B, channel, K, h, w)

    def loss(self, out: Tensor, batch: dict) -> Tensor:
        size = tuple(out.shape[-2:])
        if self.target_sampling == "average_encodings":  # each channel's one-hot bins averaged over the block
            b = out.shape[0]
            idx, weights = hard_targets(encode_1d(batch["ab"] * AB_NORM, self.n_bins).flatten(0, 1))  # (2B, 1, H, W)
            targets = block_average(idx, weights, self.n_bins, size).view(b, 2, self.n_bins, *size)
            return -(targets * F.log_softmax(self._logits(out), dim=2)).sum(dim=2).mean()
        targets = encode_1d(block_colors(batch["ab"], size, self.target_sampling) * AB_NORM, self.n_bins)
        return F.cross_entropy(self._logits(out).transpose(1, 2), targets)  # targets (B, 2, h, w)

    def decode_at(self, out: Tensor, temperature: float) -> Tensor:
        return annealed_mean_1d(out.float(), self.centers, temperature) / AB_NORM

    def pixel_entropy(self, out: Tensor) -> Tensor:
        return entropy(self._logits(out), dim=2).sum(dim=1)  # a and b independent: entropies add

    def ab_distribution(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """The joint of the independent a and b distributions: (B, K*K, h, w) over the K x K grid of centres."""
        probs = self._logits(out).softmax(dim=2)  # (B, 2, K, h, w)
        joint = probs[:, 0, :, None] * probs[:, 1, None, :]  # (B, K, K, h, w): a index, b index
        grid = torch.stack(torch.meshgrid(self.centers, self.centers, indexing="ij"), dim=-1).view(-1, 2)
        return joint.flatten(1, 2), grid


class Bins2DColorizer(BinsColorizer):
    """Joint ab bins: soft (or one-hot) targets, cross-entropy weighted per pixel by the
    rebalancing weight of the target's most likely bin, computed at 1/``loss_stride`` resolution,
    one target per block of ``loss_stride`` x ``loss_stride`` pixels (``target_sampling``).

    Buffers (saved in checkpoints, identical on every DDP rank): ``centers`` (Q, 2) Lab units,
    ``prior`` (Q,) and ``weights`` (Q,) with sum(prior * weights) = 1; with the n most frequent bins also
    ``grid_centers`` (G, 2) and ``grid_prior`` (G,), the grid they were chosen from and the distribution of
    the training targets over it (the smoothed prior for soft targets, the raw one for one-hot targets),
    over which ``frequent_decode=grid`` decodes.
    """

    def __init__(self, net, optim: dict, centers: Tensor, prior: Tensor, bins: str = "gamut",
                 n_bins: int = 313, lam: float = 0.5, k: int = 5, sigma: float = 5.0, soft: bool = True,
                 rebalance: bool = True, rebalance_uniform: str = "observed", temperature: float = 0.38,
                 loss_stride: int = 4, target_sampling: str = "subsample", frequent_decode: str = "grid",
                 grid_centers: Tensor | None = None, grid_prior: Tensor | None = None, n_samples: int = 8,
                 data_prior: Tensor | None = None):
        super().__init__(net, optim, temperature, n_samples, data_prior)
        if loss_stride < 1:
            raise ValueError(f"model.loss_stride must be >= 1. Got {loss_stride}")
        check_target_sampling(target_sampling)
        self.frequent_decode = check_frequent_decode(frequent_decode)
        if grid_centers is not None:  # the n most frequent bins: the grid they stand for
            self.register_buffer("grid_centers", grid_centers.float())
            self.register_buffer("grid_prior", grid_prior.float())
        self.k, self.sigma, self.soft, self.loss_stride = k, sigma, soft, loss_stride
        self.target_sampling = target_sampling
        self.register_buffer("centers", centers.float())
        self.register_buffer("prior", prior.float())
        weights = rebalance_weights(prior.double(), lam, rebalance_uniform) if rebalance \
            else torch.ones(len(prior), dtype=torch.float64)
        self.register_buffer("weights", weights.float())

    @classmethod
    def net_out_channels(cls, bins: str = "gamut", n_bins: int = 313, **_) -> int:
        return len(gamut_centers()) if bins == "gamut" else n_bins

    @classmethod
    def from_data_prior(cls, cfg: DictConfig, counts: Tensor) -> dict:
        """Centres and prior from the training data's pixel counts (Q,) over ``gamut_centers(cfg.prior.grid)``:
        all in-gamut bins, or the ``n_bins`` most frequent with every other colour folded onto its nearest
        kept bin; the prior smoothed with ``cfg.prior.sigma``."""
        model = cfg.model
        if model.bins not in BIN_SOURCES:
            raise ValueError(f"model.bins must be one of {BIN_SOURCES}. Got {model.bins!r}")
        all_centers = gamut_centers(cfg.prior.grid)
        if model.bins == "gamut":
            return {"centers": all_centers, "prior": smooth_prior(counts, all_centers, cfg.prior.sigma)}
        kept = frequent_centers(all_centers, smooth_prior(counts, all_centers, cfg.prior.sigma), model.n_bins)
        # colours outside the kept set belong to their nearest kept bin
        kept_counts = torch.zeros(len(kept), dtype=torch.float64).index_add_(0, fold_onto(all_centers, kept),
                                                                            counts.double())
        return {"centers": kept, "prior": smooth_prior(kept_counts, kept, cfg.prior.sigma),
                # how the targets spread over the grid: soft encoding ~ the prior smoothed like it, one-hot = raw
                "grid_centers": all_centers,
                "grid_prior": smooth_prior(counts, all_centers, cfg.prior.sigma if model.soft else 0.0)}

    def encode(self, ab: Tensor) -> tuple[Tensor, Tensor]:
        """ab (B, 2, H, W) Lab units -> targets in sparse form (indices, weights) (B, k, H, W), most likely first."""
        if self.soft:
            return soft_encode_sparse(ab, self.centers, self.k, self.sigma)
        return hard_targets(hard_encode(ab, self.centers))

    def targets(self, ab_norm: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor | None, Tensor]:
        """The loss targets at ``size`` of ab_norm (B, 2, H, W): (indices, weights) in sparse form (B, k, h, w)
        and the index of each target's most likely bin (B, h, w); for ``average_encodings`` the targets are
        dense, (distributions (B, Q, h, w), None, most likely bin)."""
        if self.target_sampling == "average_encodings":  # every full-resolution pixel encoded, then averaged
            dense = block_average(*self.encode(ab_norm * AB_NORM), len(self.centers), size)
            return dense, None, dense.argmax(dim=1)
        idx, weights = self.encode(block_colors(ab_norm, size, self.target_sampling) * AB_NORM)
        return idx, weights, idx[:, 0]

    def loss(self, out: Tensor, batch: dict) -> Tensor:
        h, w = batch["ab"].shape[-2:]
        size = (h // self.loss_stride, w // self.loss_stride)
        log_p = F.log_softmax(resize_to(out.float(), size), dim=1)  # (B, Q, h', w')
        target, weights, most_likely = self.targets(batch["ab"], size)
        if weights is None:
            cross_entropy = -(target * log_p).sum(dim=1)
        else:
            cross_entropy = -(weights * log_p.gather(1, target)).sum(dim=1)
        return (self.weights[most_likely] * cross_entropy).mean()

    def _on_grid(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """(logits, centres) to decode from: the network's own, or with ``frequent_decode=grid`` its
        distribution over the n kept bins spread onto the grid they were chosen from (B, G, h, w)."""
        expansion = self._grid_expansion() if hasattr(self, "grid_centers") and self.frequent_decode == "grid" else None
        if expansion is None:
            return out.float(), self.centers
        log_p = F.log_softmax(out.float(), dim=1)
        return expand_to_grid(log_p, self.centers, self.grid_centers, self.grid_prior, expansion), self.grid_centers

    def _grid_expansion(self) -> tuple[Tensor, Tensor] | None:
        """``grid_expansion`` of the buffers, or None for a checkpoint that holds no grid (grid_prior 0):
        worked out again only when a buffer is replaced or written (loading, .to()), not per decode, where
        reading grid_prior would make the host wait for the device."""
        buffers = (self.centers, self.grid_centers, self.grid_prior)
        if not same_tensors(getattr(self, "_expansion_stamp", None), *buffers):
            with torch.inference_mode(False):  # validation often comes first; training's autograd saves it
                self._expansion = grid_expansion(*buffers) if bool(self.grid_prior.any()) else None
            self._expansion_stamp = tensor_stamp(*buffers)
        return self._expansion

    def decode_at(self, out: Tensor, temperature: float) -> Tensor:
        return annealed_mean_logits(*self._on_grid(out), temperature) / AB_NORM

    def pixel_entropy(self, out: Tensor) -> Tensor:
        return entropy(out)

    def ab_distribution(self, out: Tensor) -> tuple[Tensor, Tensor]:
        logits, centers = self._on_grid(out)
        return logits.softmax(dim=1), centers
