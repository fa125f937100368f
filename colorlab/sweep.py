"""Run a W&B sweep YAML offline: ``python -m colorlab.sweep SWEEP.yaml --count N [key=value ...]``.

The same file works online (``wandb sweep SWEEP.yaml`` + ``wandb agent``). Offline, W&B's own
search engine (the PyPI package ``sweeps``: grid, random, bayes) proposes each trial from the
results so far; each trial runs the YAML's ``command`` as a subprocess (``${args_no_hyphens}``
becomes ``key=value`` arguments) with W&B offline, the sweep's name as the W&B group and its own
run_dir; its metric is read from the trial's metrics.json. A failed trial is recorded as failed
and the sweep goes on. Writes summary.csv, summary.md and metric.png into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import yaml


def trial_command(sweep: dict, params: dict, overrides: list[str], run_dir: Path, group: str) -> list[str]:
    """The YAML's command with W&B's macros filled in, plus the trial's run_dir and group."""
    args = [f"{key}={value}" for key, value in params.items()]
    command = sweep.get("command") or ["${env}", "${interpreter}", "${program}", "${args}"]
    out = []
    for part in command:
        if part == "${env}":
            continue
        if part in ("${interpreter}", "python", "python3"):
            out.append(sys.executable)
        elif part == "${program}":
            out.append(sweep["program"])
        elif part in ("${args_no_hyphens}", "${args}"):
            out += args if part == "${args_no_hyphens}" else [f"--{a}" for a in args]
        else:
            out.append(part)
    # "+": a valid override whichever logger the trial uses
    return out + overrides + [f"run_dir={run_dir}", f"+logger.group={group}"]


def read_metric(run_dir: Path, name: str) -> float | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get(name)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _import_sweeps():
    import warnings

    with warnings.catch_warnings():  # sweeps 0.3 still uses a pydantic-1 config key
        warnings.simplefilter("ignore", UserWarning)
        import sweeps
    return sweeps


def run_sweep(sweep_path: Path, count: int, overrides: list[str], out: Path,
              timeout: float | None = None) -> list[dict]:
    sweeps = _import_sweeps()
    RunState, SweepRun = sweeps.RunState, sweeps.SweepRun

    sweep = yaml.safe_load(sweep_path.read_text())
    metric, goal = sweep["metric"]["name"], sweep["metric"].get("goal", "minimize")
    group = sweep.get("name", sweep_path.stem)
    runs: list[SweepRun] = []
    rows: list[dict] = []
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "offline"}
    for index in range(count):
        suggestion = sweeps.next_run(sweep, runs)
        if suggestion is None:  # a grid is exhausted
            print(f"sweep: the search space is exhausted after {index} trials")
            break
        params = {key: entry["value"] for key, entry in suggestion.config.items()}
        run_dir = out / f"trial-{index:03d}"
        command = trial_command(sweep, params, overrides, run_dir, group)
        print(f"sweep: trial {index + 1}/{count}: {' '.join(f'{k}={v}' for k, v in params.items())}", flush=True)
        try:
            result = subprocess.run(command, env=env, timeout=timeout, capture_output=True, text=True)
            returncode, log = result.returncode, result.stdout + result.stderr
        except subprocess.TimeoutExpired as e:
            returncode, log = -1, f"timed out after {timeout} s\n{e.stdout or ''}{e.stderr or ''}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "trial.log").write_text(log if isinstance(log, str) else log.decode(errors="replace"))
        value = read_metric(run_dir, metric) if returncode == 0 else None
        state = RunState.finished if value is not None else RunState.failed
        if state is RunState.failed:
            print(f"sweep: trial {index + 1} failed (exit {returncode}); see {run_dir / 'trial.log'}", flush=True)
        runs.append(SweepRun(name=run_dir.name, state=state, config=suggestion.config,
                             summary_metrics={metric: value} if value is not None else {}))
        rows.append({"trial": run_dir.name, **params, metric: value, "state": state.value})
    write_summary(rows, metric, goal, out)
    return rows


def write_summary(rows: list[dict], metric: str, goal: str, out: Path) -> None:
    """summary.csv, summary.md (best trial first) and metric.png (metric against each parameter)."""
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
    ordered = sorted(rows, key=lambda r: (r[metric] is None, sign * (r[metric] or 0)))
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join("—" if r[c] is None else f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c])
                                for c in columns) + " |" for r in ordered]
    (out / "summary.md").write_text(f"Sweep {out.name}: {metric} ({goal}), best first\n\n" + "\n".join(lines) + "\n")
    params = [c for c in columns if c not in ("trial", metric, "state")]
    fig, axes = plt.subplots(1, len(params), figsize=(4.5 * len(params), 3.6), squeeze=False)
    done = [r for r in rows if r[metric] is not None]
    for ax, param in zip(axes[0], params, strict=True):
        ax.scatter([r[param] for r in done], [r[metric] for r in done], c=range(len(done)), cmap="viridis")
        ax.set(xlabel=param, ylabel=metric, title=f"{metric} vs {param}")
    fig.tight_layout()
    fig.savefig(out / "metric.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m colorlab.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="a W&B sweep YAML, e.g. sweeps/lambda.yaml")
    parser.add_argument("--count", type=int, default=5, help="number of trials")
    parser.add_argument("--out", type=Path, help="output folder (default runs/sweeps/<name>-<timestamp>)")
    parser.add_argument("--timeout", type=float, help="seconds before a trial is stopped and counted failed")
    parser.add_argument("overrides", nargs="*", help="key=value passed to every trial (e.g. trainer.max_epochs=2)")
    args = parser.parse_intermixed_args(argv)
    if not args.sweep.is_file():
        available = sorted(map(str, Path("sweeps").glob("*.yaml")))
        parser.error(f"sweep file {args.sweep} does not exist; available: {available}")
    try:
        _import_sweeps()
    except ImportError:
        parser.error("offline sweeps need W&B's search engine: pip install 'colorlab[sweep]' (the package 'sweeps')")
    out = args.out or Path("runs/sweeps") / f"{args.sweep.stem}-{datetime.now():%Y%m%d-%H%M%S}"
    rows = run_sweep(args.sweep, args.count, args.overrides, out, args.timeout)
    print((out / "summary.md").read_text() if rows else "no trials ran")
    print(f"written: {out / 'summary.csv'}, {out / 'summary.md'}, {out / 'metric.png'}")
    return 0 if any(r["state"] == "finished" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
