"""The same validation images through several checkpoints: one table, one labelled image grid.

    python -m colorlab.compare CKPT [CKPT ...] [out=DIR] [n=8] [rank=METRIC] [data overrides, e.g. data.val_size=256]
        [evaluate.fid_weights=hub|PATH|random] [evaluate.lpips_weights=hub|PATH|random]

The data source is the first checkpoint's (its validation split, deterministic), unless
overridden. FID and LPIPS are added when their weights are given (colorlab/evaluation/metric_nets.py).
``rank=METRIC`` orders the table by any column, best first (fid, lpips, delta_cf and errors: lowest).
Writes ``compare.md`` (metrics per checkpoint) and ``compare.png`` (columns: gray
input, each checkpoint labelled by experiment, ground truth) into ``out`` (default: compare/). Checkpoints
of one experiment are labelled by the settings they differ in (``unet_bins (model.lam=0.0)``), or by
their run directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from colorlab.cli import error
from colorlab.config import ConfigError, split_arguments, usage_exit_code
from colorlab.evaluation.metric_nets import MetricWeightsError
from colorlab.evaluation.side_by_side import rank_rows, score_checkpoints
from colorlab.viz import labelled_grid, save_png


def compare(checkpoints: list[Path], out: Path, n: int = 8, data_overrides: list[str] | None = None,
            weights: dict | None = None, rank: str | None = None) -> dict:
    """``weights``: {'fid': ..., 'lpips': ...} turns those metrics on (hub, a path or random)."""
    scored = score_checkpoints(checkpoints, data_overrides, weights, keep=n)
    rows = {s.label: s.metrics for s in scored}  # two runs of one experiment: also what tells them apart
    if rank is not None:
        rows = rank_rows(rows, rank)
    truth = scored[0].lab_true
    gray = torch.cat([truth[:, :1], torch.zeros_like(truth[:, 1:])], dim=1)
    columns = [("gray", gray), *((s.label, s.lab_pred) for s in scored), ("ground truth", truth)]
    out.mkdir(parents=True, exist_ok=True)
    save_png(labelled_grid(columns), out / "compare.png")
    (out / "compare.md").write_text(markdown_table(rows))
    return rows


def markdown_table(rows: dict) -> str:
    """``rows`` (label -> metrics) as a Markdown table, 4 significant digits; a metric a row lacks: "—"."""
    keys = list(dict.fromkeys(k for row in rows.values() for k in row))
    table = ["| experiment | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, row in rows.items():
        label = name.replace("|", "\\|")  # a label's | would end its cell
        table.append(f"| {label} | " + " | ".join(f"{row[k]:.4g}" if k in row else "—" for k in keys) + " |")
    return "\n".join(table) + "\n"


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
