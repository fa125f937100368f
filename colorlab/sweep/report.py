"""summary.csv, summary.md (best trial first, by the sweep's metric or ``--rank``) and metric.png (the metric
against each parameter)."""

from __future__ import annotations

import csv
from pathlib import Path


def write_summary(rows: list[dict], metric: str, rank: str, goal: str, out: Path) -> None:
    """summary.csv, summary.md (best trial first by the column ``rank``, ``goal`` minimize or maximize) and
    metric.png (the sweep's ``metric`` against each parameter). ``rows``: trial, the parameters, ``metric``,
    any added metrics, state (engine.summary_rows, ranking.add_scores)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not rows:
        return
    columns = list(rows[0])
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    sign = 1 if goal == "minimize" else -1
    ordered = sorted(rows, key=lambda r: (r[rank] is None, sign * (r[rank] or 0)))
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join("—" if r[c] is None else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])
                                for c in columns) + " |" for r in ordered]
    (out / "summary.md").write_text(f"Sweep {out.name}: {rank} ({goal}), best first\n\n" + "\n".join(lines) + "\n")
    params = columns[1:columns.index(metric)]
    fig, axes = plt.subplots(1, len(params), figsize=(4.5 * len(params), 3.6), squeeze=False)
    done = [r for r in rows if r[metric] is not None and all(isinstance(r[p], int | float) for p in params)]
    for ax, param in zip(axes[0], params, strict=True):
        ax.scatter([r[param] for r in done], [r[metric] for r in done], c=range(len(done)), cmap="viridis")
        ax.set(xlabel=param, ylabel=metric, title=f"{metric} vs {param}")
    fig.tight_layout()
    fig.savefig(out / "metric.png", dpi=110)
    plt.close(fig)
