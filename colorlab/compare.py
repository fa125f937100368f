"""The same validation images through several checkpoints: one table, one labelled image grid.

    python -m colorlab.compare CKPT [CKPT ...] [out=DIR] [n=8] [data overrides, e.g. data.val_size=256]

The data source is the first checkpoint's (its validation split, deterministic), unless
overridden. Writes ``compare.md`` (metrics per checkpoint) and ``compare.png`` (columns: gray
input, each checkpoint labelled by experiment, ground truth) into ``out`` (default: compare/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from colorlab.color import denormalize_lab
from colorlab.config import ConfigError, override, usage_exit_code
from colorlab.data import DeviceBatches, validation_data
from colorlab.metrics import ColorMetrics
from colorlab.models import load_colorizer
from colorlab.viz import labelled_grid, save_png


def compare(checkpoints: list[Path], out: Path, n: int = 8, data_overrides: list[str] | None = None) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = [load_colorizer(path, device) for path in checkpoints]
    # the first checkpoint's data (checked overrides on top) for every model; each its own embeddings
    data = override(OmegaConf.create(models[0].config), data_overrides or []).data
    rows, grid_lab = {}, None
    names = [m.config["experiment"] for m in models]
    for name, model in zip(names, models, strict=True):
        cfg = override(OmegaConf.create(model.config), [])
        cfg.data = data
        datamodule = validation_data(cfg)
        metrics = ColorMetrics(model.val_metrics.auc.prior).to(device)  # its training prior: auc_rebalanced
        batches = DeviceBatches(datamodule, device)
        for i, batch in enumerate(tqdm(batches, desc=name, disable=None)):
            lab_pred = model.predict_lab(batch)
            lab_true = denormalize_lab(batch["l"], batch["ab"])
            metrics.update(lab_pred, lab_true, batch.get("bimodal"))
            if i == 0:
                if grid_lab is None:  # the same images for every checkpoint
                    gray = torch.cat([lab_true[:n, :1], torch.zeros_like(lab_true[:n, 1:])], dim=1)
                    grid_lab = {"gray": gray.cpu(), "ground truth": lab_true[:n].cpu()}
                grid_lab[name] = lab_pred[:n].cpu()
        rows[name] = {k.removeprefix("val/"): float(v) for k, v in metrics.compute().items()}
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
    checkpoints = [Path(a) for a in argv if "=" not in a]
    options = dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("data."))
    data_overrides = [a for a in argv if a.startswith("data.")]
    try:
        unknown = set(options) - {"out", "n"}
        if unknown:
            raise ConfigError(f"unknown option(s) {sorted(unknown)}; valid: out=DIR, n=N, data.KEY=VALUE")
        missing = [str(p) for p in checkpoints if not p.is_file()]
        if missing:
            raise ConfigError(f"checkpoint(s) not found: {', '.join(missing)}")
        rows = compare(checkpoints, Path(options.get("out", "compare")), int(options.get("n", 8)), data_overrides)
    except (ConfigError, ValueError) as e:
        print(f"colorlab.compare: error: {e}", file=sys.stderr)
        return 2
    print((Path(options.get("out", "compare")) / "compare.md").read_text(), end="")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
