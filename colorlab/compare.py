"""The same validation images through several checkpoints: one table, one labelled image grid.

    python -m colorlab.compare CKPT [CKPT ...] [out=DIR] [n=8] [rank=METRIC] [data overrides, e.g. data.val_size=256]
        [evaluate.fid_weights=hub|PATH|random] [evaluate.lpips_weights=hub|PATH|random]

The data source is the first checkpoint's (its validation split, deterministic), unless
overridden. FID and LPIPS are added when their weights are given (colorlab/evaluation/metric_nets.py).
``rank=METRIC`` orders the table by any column, best first (fid, lpips, delta_cf and errors: lowest).
Writes ``compare.md`` (metrics per checkpoint) and ``compare.png`` (columns: gray
input, each checkpoint labelled by experiment, ground truth) into ``out`` (default: compare/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from colorlab.cli import error
from colorlab.color import denormalize_lab, lab_to_rgb, lab_to_uint8
from colorlab.config import ConfigError, override, split_arguments, usage_exit_code
from colorlab.data import DeviceBatches, embeddings_for, validation_data
from colorlab.evaluation.metric_nets import MetricWeightsError, metric_factories
from colorlab.metrics import ColorMetrics
from colorlab.models import load_colorizer
from colorlab.viz import labelled_grid, save_png

LOWER_IS_BETTER = ("fid", "lpips", "delta_cf", "ab_error", "ab_error_gray")


def rank_rows(rows: dict, metric: str) -> dict:
    """``rows`` (name -> metrics) ordered best first by ``metric``; rows without it last."""
    if not any(metric in row for row in rows.values()):
        raise ConfigError(f"rank={metric} is not a column; valid: {sorted({k for r in rows.values() for k in r})}")
    sign = 1 if metric in LOWER_IS_BETTER else -1
    return dict(sorted(rows.items(), key=lambda item: (metric not in item[1], sign * item[1].get(metric, 0))))


def compare(checkpoints: list[Path], out: Path, n: int = 8, data_overrides: list[str] | None = None,
            weights: dict | None = None, rank: str | None = None) -> dict:
    """``weights``: {'fid': ..., 'lpips': ...} turns those metrics on (hub, a path or random)."""
    weights = weights or {}
    factories = metric_factories({"fid": "fid" in weights, "fid_weights": weights.get("fid"),
                                  "lpips": "lpips" in weights, "lpips_weights": weights.get("lpips")})
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = [load_colorizer(path, device) for path in checkpoints]
    # the first checkpoint's data (checked overrides on top) for every model; each its own embeddings
    data = override(OmegaConf.create(models[0].config), data_overrides or []).data
    rows, grid_lab, datamodule = {}, None, None
    names = [m.config["experiment"] for m in models]
    for name, model in zip(names, models, strict=True):
        cfg = override(OmegaConf.create(model.config), [])
        cfg.data = data
        datamodule = validation_data(cfg) if datamodule is None else embeddings_for(datamodule, cfg)
        metrics = ColorMetrics(model.val_metrics.auc.prior).to(device)  # its training prior: auc_rebalanced
        extra = {k: make().to(device) for k, make in factories.items()}
        for i, batch in enumerate(tqdm(DeviceBatches(datamodule, device), desc=name, disable=None)):
            lab_pred = model.predict_lab(batch)
            lab_true = denormalize_lab(batch["l"], batch["ab"])
            metrics.update(lab_pred, lab_true, batch.get("bimodal"))
            if "fid" in extra:
                extra["fid"].update(lab_to_uint8(lab_true), real=True)
                extra["fid"].update(lab_to_uint8(lab_pred), real=False)
            if "lpips" in extra:
                extra["lpips"].update(lab_to_rgb(lab_pred), lab_to_rgb(lab_true))
            if i == 0:
                if grid_lab is None:  # the same images for every checkpoint
                    gray = torch.cat([lab_true[:n, :1], torch.zeros_like(lab_true[:n, 1:])], dim=1)
                    grid_lab = {"gray": gray.cpu(), "ground truth": lab_true[:n].cpu()}
                grid_lab[name] = lab_pred[:n].cpu()
        rows[name] = {k.removeprefix("val/"): float(v) for k, v in metrics.compute().items()}
        rows[name].update({k: float(metric.compute()) for k, metric in extra.items()})
    if rank is not None:
        rows = rank_rows(rows, rank)
    columns = [("gray", grid_lab["gray"])] + [(name, grid_lab[name]) for name in names]
    columns.append(("ground truth", grid_lab["ground truth"]))
    out.mkdir(parents=True, exist_ok=True)
    save_png(labelled_grid(columns), out / "compare.png")
    keys = list(dict.fromkeys(k for row in rows.values() for k in row))  # a metric one model lacks: "—"
    table = ["| experiment | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    table += [f"| {name} | " + " | ".join(f"{row[k]:.4g}" if k in row else "—" for k in keys) + " |"
              for name, row in rows.items()]
    (out / "compare.md").write_text("\n".join(table) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        options, overrides, paths = split_arguments(argv, ("out", "n", "rank", "evaluate.fid_weights",
                                                           "evaluate.lpips_weights"), ("data.",), "checkpoints")
        checkpoints = [Path(a) for a in paths]
        weights = {key: options[f"evaluate.{key}_weights"] for key in ("fid", "lpips")
                   if f"evaluate.{key}_weights" in options}
        missing = [str(p) for p in checkpoints if not p.is_file()]
        if missing:
            raise ConfigError(f"checkpoint(s) not found: {', '.join(missing)}")
        rows = compare(checkpoints, Path(options.get("out", "compare")), int(options.get("n", 8)), overrides,
                       weights, options.get("rank"))
    except (ConfigError, ValueError, MetricWeightsError) as e:
        return error("compare", e)
    print((Path(options.get("out", "compare")) / "compare.md").read_text(), end="")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
