"""The base LightningModule that every loss formulation extends.

A formulation supplies how many maps its network outputs (``net_out_channels``), its loss on
the network output, how it decodes that output to ab, and optionally what it derives from the
training data's ab statistics (``from_data_prior``; the statistics come from the data side, see
colorlab.models.build_model). Everything else —
the training and validation loops, metrics, sample grids, optimiser and schedule — is here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image import PeakSignalNoiseRatio

from colorlab.color import denormalize_lab, lab_to_uint8
from colorlab.hints import HintSampling, sample_hints
from colorlab.metrics import ColorMetrics
from colorlab.models.carried import temporal_loss, training_hints
from colorlab.viz import sample_grid, save_png

SCHEDULERS = ("cosine", "none")
# torch's OneCycleLR defaults, kept so that long runs follow exactly the schedule they always had
DIV_FACTOR, FINAL_DIV_FACTOR = 25.0, 1e4
BETA1_MAX, BETA1_BASE = 0.95, 0.85


def _cos_anneal(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def one_cycle(step: int, total: int, warmup: float) -> tuple[float, float]:
    """(learning-rate factor in [1/25/1e4, 1], Adam's beta1) at ``step`` of a ``total``-step run.

    torch's OneCycleLR with cosine annealing: cosine warm-up from 1/25 of the peak over the first
    ``warmup`` fraction of the steps, then cosine decay to 1/25/1e4 of it, beta1 going 0.95 -> 0.85 -> 0.95.
    Defined for every run length: where the warm-up would end at step 0 or before (runs of about
    1/warmup steps or fewer; OneCycleLR divides by zero when it ends exactly at 0) there is none and the
    run starts at the peak; steps past ``total`` keep the final value.
    """
    initial, final = 1 / DIV_FACTOR, 1 / DIV_FACTOR / FINAL_DIV_FACTOR
    step, last = min(step, total - 1), total - 1
    warmup_end = warmup * total - 1  # OneCycleLR's end of phase one (a float)
    if warmup_end > 0 and step <= warmup_end:
        pct = step / warmup_end
        return _cos_anneal(initial, 1.0, pct), _cos_anneal(BETA1_MAX, BETA1_BASE, pct)
    start = max(warmup_end, 0.0)
    pct = (step - start) / (last - start) if last > start else 0.0
    return _cos_anneal(1.0, final, pct), _cos_anneal(BETA1_BASE if warmup_end > 0 else BETA1_MAX, BETA1_MAX, pct)


class OneCycle(torch.optim.lr_scheduler.LRScheduler):
    """``one_cycle`` as a per-step scheduler of an Adam-family optimiser (sets lr and beta1)."""

    def __init__(self, optimizer: torch.optim.Optimizer, max_lr: float, total_steps: int, warmup: float):
        self.max_lr, self.total_steps, self.warmup = max_lr, max(1, total_steps), warmup
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        factor, beta1 = one_cycle(self.last_epoch, self.total_steps, self.warmup)
        for group in self.optimizer.param_groups:
            group["betas"] = (beta1, group["betas"][1])
        return [self.max_lr * factor * group.get("lr_scale", 1.0) for group in self.optimizer.param_groups]


class Colorizer(pl.LightningModule):
    """net: L (B, 1, H, W) -> maps (B, net_out_channels, H/s, W/s), s = net.output_stride.

    With ``hint_sampling`` set (hints.enabled) the network's input is L, hint ab and hint mask
    (B, 4, H, W) (colorlab/hints.py): training draws synthetic hints for every batch (video frames
    that carry their previous frame's colours get those instead, degraded as ``hints.carry_*`` say
    (``degrade_carried``); ``hints.drop`` leaves images with none); validation metrics are those
    with no hints (comparable with every other experiment), plus ``val/psnr_hinted`` with hints
    drawn from the same scheme, seeded per batch.

    ``data_prior`` (313,): the training data's smoothed ab prior over Zhang's in-gamut bins, which weights
    ``val/auc_rebalanced`` (None: unknown, that metric is left out).
    """

    def __init__(self, net: nn.Module, optim: dict, n_samples: int = 8, data_prior: Tensor | None = None):
        super().__init__()
        if optim.get("scheduler", "none") not in SCHEDULERS:
            raise ValueError(f"optim.scheduler must be one of {SCHEDULERS}. Got {optim['scheduler']!r}")
        self.net, self.optim, self.n_samples = net, dict(optim), n_samples
        self.val_metrics = ColorMetrics(data_prior)
        # hint models only: PSNR on 8-bit RGB with synthetic hints (ColorMetrics' PSNR has none)
        self.hinted_psnr = PeakSignalNoiseRatio(data_range=255.0, reduction="elementwise_mean", dim=(1, 2, 3))
        self.config: dict | None = None  # the resolved run config, stored in checkpoints
        self.hint_sampling: HintSampling | None = None  # set by build_model when hints.enabled
        self.temporal_weight = 0.0  # set by build_model from temporal.weight (video data)
        self._samples: tuple[Tensor, Tensor] | None = None
        self.validated_step = -1  # the global step whose weights were last validated (sanity checks aside)
        self.frozen_blocks: list[str] = []  # init=: network blocks kept as loaded (colorlab/finetune.py)
        self.pretrained_lr_scale = 1.0  # init=: the loaded network's learning rate = optim.lr x this

    # --- what a formulation defines -------------------------------------------------------
    @classmethod
    def net_out_channels(cls, **model_config) -> int:
        raise NotImplementedError

    @classmethod
    def from_data_prior(cls, cfg, counts: Tensor) -> dict:
        """Constructor arguments derived from the training data's pixel counts (Q,) per in-gamut bin
        (e.g. bin centres and a smoothed prior)."""
        return {}

    def loss(self, out: Tensor, batch: dict) -> Tensor:
        raise NotImplementedError

    def decode(self, out: Tensor) -> Tensor:
        """Network output -> ab_norm (B, 2, H/s, W/s) in [-1, 1]."""
        raise NotImplementedError

    # --- shared machinery -----------------------------------------------------------------
    def forward(self, l: Tensor, embedding: Tensor | None = None, hint_ab: Tensor | None = None,
                hint_mask: Tensor | None = None) -> Tensor:
        """l (B, 1, H, W); embedding (B, dim) for fusion nets; hint_ab (B, 2, H, W) and hint_mask
        (B, 1, H, W) for hint models (None: no hints)."""
        if self.hint_sampling is not None:
            if hint_ab is None:
                hint_ab = l.new_zeros(l.shape[0], 2, *l.shape[-2:])
                hint_mask = l.new_zeros(l.shape[0], 1, *l.shape[-2:])
            l = torch.cat([l, hint_ab.to(l.dtype), hint_mask.to(l.dtype)], dim=1)
        elif hint_ab is not None:
            raise ValueError("this model was trained without hint inputs (hints.enabled=false), so it cannot "
                             "take hints; train one with experiment=hints_unet")
        return self.net(l) if embedding is None else self.net(l, embedding)

    def run_net(self, batch: dict) -> Tensor:
        """The network on a batch: L, plus the global embedding and hints when the batch carries them."""
        # video_stack: the stack of L frames centred on this one, when the data carries it
        return self(batch.get("l_stack", batch["l"]), batch.get("embedding"), batch.get("hint_ab"),
                    batch.get("hint_mask"))

    @property
    def predicts_distribution(self) -> bool:
        """Whether ``ab_distribution`` gives a distribution (palettes at a point, uncertainty)."""
        return False

    def ab_distribution(self, out: Tensor) -> tuple[Tensor, Tensor] | None:
        """(probabilities (B, Q, h, w), bin centres (Q, 2) in Lab units) when the formulation predicts a
        distribution over ab (for palettes and uncertainty), else None."""
        return None

    def pixel_entropy(self, out: Tensor) -> Tensor:
        """Per-pixel entropy (B, h, w) of the predicted ab distribution, in nats."""
        if not self.predicts_distribution:
            raise ValueError(f"{type(self).__name__} predicts no ab distribution, so it has no per-pixel entropy")
        probs = self.ab_distribution(out)[0]
        return -(probs * probs.clamp_min(1e-12).log()).sum(dim=1)

    def predict_ab(self, out: Tensor, size: tuple[int, int]) -> Tensor:
        """Decoded ab_norm upsampled to the input resolution: (B, 2, H, W)."""
        ab = self.decode(out).float()
        return ab if ab.shape[-2:] == size else F.interpolate(ab, size=size, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def predict_lab(self, batch: dict) -> Tensor:
        """Lab (B, 3, H, W) prediction for a batch as the DataModule delivers it (``l``, and the
        embedding, hints or L stack when the batch carries them); L is the input's own."""
        return denormalize_lab(batch["l"], self.predict_ab(self.run_net(batch), batch["l"].shape[-2:]))

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        if batch["l"].shape[0] == 0:  # every file of the batch failed to decode (a shape: known on the host)
            # a zero loss over every trainable parameter, not None: under DDP every rank must reach the
            # gradient all-reduce, or the others wait for this one forever; like an all-gray batch's zero loss
            return sum((p.sum() for p in self.parameters() if p.requires_grad), torch.zeros((), device=self.device)) * 0
        if self.hint_sampling is not None and "hint_ab" not in batch:
            batch["hint_ab"], batch["hint_mask"] = training_hints(self, batch)
        out = self.run_net(batch)
        loss = self.loss(out, batch)
        if self.temporal_weight > 0:
            temporal = temporal_loss(self, out, batch)
            self.log("train/temporal", temporal, batch_size=batch["l"].shape[0])
            loss = loss + self.temporal_weight * temporal
        if "has_colour" in batch:  # 0 when every image of the batch was gray (colorlab.data.replace_gray)
            loss = loss * batch["has_colour"]
        # not prog_bar=True: Lightning would read it on the host after every step (loggers.ProgressBar shows it)
        self.log("train/loss", loss, batch_size=batch["l"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.run_net(batch)
        self.log("val/loss", self.loss(out, batch), sync_dist=True, batch_size=batch["l"].shape[0])
        lab_pred = denormalize_lab(batch["l"], self.predict_ab(out, batch["l"].shape[-2:]))
        lab_true = denormalize_lab(batch["l"], batch["ab"])
        self.val_metrics.update(lab_pred, lab_true, batch.get("bimodal"))
        self.validation_extra(out, batch)
        if self.hint_sampling is not None:
            seed = (self.config or {}).get("seed", 0)
            generator = torch.Generator(batch["l"].device).manual_seed(1_000_003 * seed + batch_idx)
            hint_ab, hint_mask = sample_hints(batch["ab"], self.hint_sampling, generator)
            ab = self.predict_ab(self(batch["l"], batch.get("embedding"), hint_ab, hint_mask), batch["l"].shape[-2:])
            rgb_hinted = lab_to_uint8(denormalize_lab(batch["l"], ab)).float()
            self.hinted_psnr.update(rgb_hinted, lab_to_uint8(lab_true).float())
        if batch_idx == 0:
            self._samples = (lab_pred[: self.n_samples].detach(), lab_true[: self.n_samples].detach())

    def validation_extra(self, out: Tensor, batch: dict) -> None:
        """Formulation-specific validation metrics (a hook; regression has none)."""

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute())
        self.val_metrics.reset()
        if self.hint_sampling is not None:
            self.log("val/psnr_hinted", self.hinted_psnr.compute())
            self.hinted_psnr.reset()
        if self._samples is not None and not self.trainer.sanity_checking and self.trainer.is_global_zero:
            self.save_samples(*self._samples)
        if not self.trainer.sanity_checking:
            self.validated_step = self.global_step
        self._samples = None

    def save_samples(self, lab_pred: Tensor, lab_true: Tensor) -> None:
        grid = sample_grid(lab_pred, lab_true)
        save_png(grid, self.run_dir / "samples" / f"epoch_{self.current_epoch:03d}.png")
        if hasattr(self.logger, "log_image"):  # W&B
            self.logger.log_image("val/samples", [grid], step=self.global_step,
                                  caption=["gray | prediction | ground truth"])

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir)

    def train(self, mode: bool = True):
        """Frozen blocks stay in eval mode: their BatchNorm statistics keep the loaded values."""
        super().train(mode)
        for name in self.frozen_blocks:
            getattr(self.net, name).eval()
        return self

    def parameter_groups(self) -> list[dict]:
        """The trainable parameters; with init= the network's in a group of its own at ``pretrained_lr_scale``."""
        if self.pretrained_lr_scale == 1.0:  # one group in the order of parameters(): checkpoints resume as before
            return [{"params": [p for p in self.parameters() if p.requires_grad]}]
        net = [p for p in self.net.parameters() if p.requires_grad]
        other = [p for n, p in self.named_parameters() if not n.startswith("net.") and p.requires_grad]
        scaled = {"params": net, "lr": self.optim["lr"] * self.pretrained_lr_scale,
                  "lr_scale": self.pretrained_lr_scale}
        return [scaled] + ([{"params": other}] if other else [])

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.optim["lr"],
                                      weight_decay=self.optim["weight_decay"],
                                      betas=tuple(self.optim["betas"]),
                                      fused=bool(self.optim.get("fused", False)) or None)
        if self.optim["scheduler"] == "none":
            return optimizer
        steps = int(self.trainer.estimated_stepping_batches)
        scheduler = OneCycle(optimizer, max_lr=self.optim["lr"], total_steps=steps, warmup=self.optim["warmup"])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["colorlab_config"] = self.config
