"""Several checkpoints on held-out batches, side by side: the colour metrics (``ColorMetrics``) of each,
FID and LPIPS where their weights are given (``metric_nets``), and the rows ranked by any metric.
What ``colorlab.compare`` tabulates and a sweep's ``--rank`` adds to its summary.

Conventions: ``lab`` float (B, 3, H, W) in CIE Lab (L in [0, 100], ab in about [-110, 110]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import Tensor
from tqdm import tqdm

from colorlab.color import denormalize_lab, lab_to_rgb, lab_to_uint8
from colorlab.config import ConfigError, override
from colorlab.data import ColorDataModule, DeviceBatches, embeddings_for, validation_data
from colorlab.evaluation.metric_nets import metric_factories
from colorlab.metrics import METRIC_NAMES, ColorMetrics
from colorlab.models import Colorizer, load_colorizer

COMPARISON_METRICS = (*METRIC_NAMES, "fid", "lpips")  # what a row can hold
LOWER_IS_BETTER = ("fid", "lpips", "delta_cf", "ab_error", "ab_error_gray")


@dataclass
class Scored:
    """One checkpoint on the held-out batches: its metrics and the first batch's first ``keep`` images."""

    experiment: str
    metrics: dict[str, float]  # name (COMPARISON_METRICS) -> value
    lab_pred: Tensor  # (keep, 3, H, W) Lab, on the CPU
    lab_true: Tensor  # (keep, 3, H, W) Lab, on the CPU


def score_checkpoints(checkpoints: list[Path], data_overrides: list[str] | None = None, weights: dict | None = None,
                      keep: int = 0, shared_data: bool = True, device: torch.device | None = None) -> list[Scored]:
    """Each checkpoint's metrics on validation batches, in the order given, on ``device`` (a GPU if any).

    ``shared_data``: the first checkpoint's validation split (``data_overrides`` on top) for every one, each
    with its own embeddings (compare); otherwise each checkpoint's own split (a sweep's trials). ``weights``:
    {'fid': ..., 'lpips': ...} turns those metrics on (hub, a path or random; metric_nets.py).
    ``data_overrides``: ``data.`` keys, checked. One model is held in memory at a time."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    weights = weights or {}
    factories = metric_factories({"fid": "fid" in weights, "fid_weights": weights.get("fid"),
                                  "lpips": "lpips" in weights, "lpips_weights": weights.get("lpips")})
    scored, data, datamodule = [], None, None
    for path in checkpoints:
        model = load_colorizer(path, device)
        cfg = override(OmegaConf.create(model.config), data_overrides or [])
        if not shared_data or datamodule is None:
            data, datamodule = cfg.data, validation_data(cfg)
        else:  # the first checkpoint's data for every model, each its own embeddings
            cfg.data = data
            datamodule = embeddings_for(datamodule, cfg)
        scored.append(_score(model, datamodule, device, factories, keep))
    return scored


def _score(model: Colorizer, datamodule: ColorDataModule, device: torch.device, factories: dict, keep: int) -> Scored:
    name = model.config["experiment"]
    metrics = ColorMetrics(model.val_metrics.auc.prior).to(device)  # its training prior: auc_rebalanced
    extra = {k: make().to(device) for k, make in factories.items()}
    first = None
    for batch in tqdm(DeviceBatches(datamodule, device), desc=name, disable=None):
        lab_pred = model.predict_lab(batch)
        lab_true = denormalize_lab(batch["l"], batch["ab"])
        metrics.update(lab_pred, lab_true, batch.get("bimodal"))
        if "fid" in extra:
            extra["fid"].update(lab_to_uint8(lab_true), real=True)
            extra["fid"].update(lab_to_uint8(lab_pred), real=False)
        if "lpips" in extra:
            extra["lpips"].update(lab_to_rgb(lab_pred), lab_to_rgb(lab_true))
        if first is None:
            first = (lab_pred[:keep].cpu(), lab_true[:keep].cpu())
    row = {k.removeprefix("val/"): float(v) for k, v in metrics.compute().items()}
    row.update({k: float(metric.compute()) for k, metric in extra.items()})
    return Scored(name, row, *first)


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


def rank_rows(rows: dict, metric: str) -> dict:
    """``rows`` (name -> metrics) ordered best first by ``metric``; rows without it last."""
    if not any(metric in row for row in rows.values()):
        raise ConfigError(f"rank={metric} is not a column; valid: {sorted({k for r in rows.values() for k in r})}")
    sign = 1 if lower_is_better(metric) else -1
    return dict(sorted(rows.items(), key=lambda item: (metric not in item[1], sign * item[1].get(metric, 0))))
