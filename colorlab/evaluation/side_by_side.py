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
from colorlab.config import ConfigError, compute_device, override
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
    label: str = ""  # unique among the checkpoints scored together (unique_labels)


# settings that say where a run wrote, how fast it ran or how it is evaluated, not what it learned: never what
# tells runs apart in a label (the budget and precision of training do)
_NOT_DISTINCTIVE = ("run_dir", "ckpt_path", "logger.", "checkpoint.", "speed.", "evaluate.", "choices.logger",
                    "choices.trainer", "data.num_workers", "data.render", "data.decode")
_DISTINCTIVE_TRAINER = ("trainer.max_epochs", "trainer.max_steps", "trainer.precision")
_FIRST = ("model.", "optim.", "net.", "data.")  # shown before other differing keys


def _flat(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _distinctive(key: str) -> bool:
    if key.startswith("trainer."):
        return key in _DISTINCTIVE_TRAINER
    return not key.startswith(_NOT_DISTINCTIVE) and not key.endswith("cache_dir")


def _same(value) -> str:
    """A value as compared between runs: 0 and 0.0 alike."""
    return repr(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)


def unique_labels(configs: list[dict], checkpoints: list[Path], most: int = 3) -> list[str]:
    """A label per checkpoint: its experiment, and where several share one, the (at most ``most``) settings
    in which they differ, model and optimiser first (``unet_bins (model.lam=0.0)``), else the run directory
    (and the checkpoint's name, for two of one run); numbered if still alike."""
    names = [config["experiment"] for config in configs]
    flat = [_flat(config) for config in configs]
    paths = [Path(path).resolve() for path in checkpoints]
    labels = []
    for i, name in enumerate(names):
        group = [j for j, other in enumerate(names) if other == name]
        keys = sorted({key for j in group for key in flat[j]}, key=lambda k: (not k.startswith(_FIRST), k))
        differing = [key for key in keys if _distinctive(key) and len({_same(flat[j].get(key)) for j in group}) > 1]
        if len(group) == 1:
            labels.append(name)
        elif differing:
            shown = ", ".join(f"{key}={flat[i].get(key)}" for key in differing[:most])
            labels.append(f"{name} ({shown}{', ...' if len(differing) > most else ''})")
        else:  # RUN/checkpoints/NAME.ckpt
            runs = [paths[j].parent.parent.name for j in group]
            run = paths[i].parent.parent.name
            labels.append(f"{name} ({run})" if runs.count(run) == 1 else f"{name} ({run}/{paths[i].stem})")
    for label in {label for label in labels if labels.count(label) > 1}:
        for n, i in enumerate(i for i, other in enumerate(labels) if other == label):
            labels[i] = f"{label} #{n + 1}"
    return labels


def score_checkpoints(checkpoints: list[Path], data_overrides: list[str] | None = None, weights: dict | None = None,
                      keep: int = 0, shared_data: bool = True, device: torch.device | None = None) -> list[Scored]:
    """Each checkpoint's metrics on validation batches, in the order given, on ``device`` (a GPU if any),
    each with a ``label`` that tells it apart from the others (unique_labels).

    ``shared_data``: the first checkpoint's validation split (``data_overrides`` on top) for every one, each
    with its own embeddings (compare); otherwise each checkpoint's own split (a sweep's trials). ``weights``:
    {'fid': ..., 'lpips': ...} turns those metrics on (hub, a path or random; metric_nets.py).
    ``data_overrides``: ``data.`` keys, checked. One model is held in memory at a time."""
    device = device or compute_device()
    weights = weights or {}
    factories = metric_factories({"fid": "fid" in weights, "fid_weights": weights.get("fid"),
                                  "lpips": "lpips" in weights, "lpips_weights": weights.get("lpips")})
    scored, configs, data, datamodule = [], [], None, None
    for path in checkpoints:
        model = load_colorizer(path, device)
        configs.append(model.config)
        cfg = override(OmegaConf.create(model.config), data_overrides or [])
        if not shared_data or datamodule is None:
            data, datamodule = cfg.data, validation_data(cfg)
        else:  # the first checkpoint's data for every model, each its own embeddings
            cfg.data = data
            datamodule = embeddings_for(datamodule, cfg)
        scored.append(_score(model, datamodule, device, factories, keep))
    for entry, label in zip(scored, unique_labels(configs, checkpoints), strict=True):
        entry.label = label
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
