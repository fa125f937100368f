"""Run a W&B sweep YAML offline on Optuna: ``python -m colorlab.sweep SWEEP.yaml --count N [key=value ...]``.

The same file works online (``wandb sweep SWEEP.yaml`` + ``wandb agent``). Offline, grid, random and
bayes (TPE) trials are proposed by Optuna from the results so far, each trial a ``colorlab.fit``
subprocess with W&B offline and its own run directory; ``early_terminate: {type: hyperband}`` prunes
trials from their per-epoch validation metric. The study lives in ``<out>/study.db`` (or
``--storage``: a journal file or a database URL that drivers on several machines share), so
``--resume OUT`` continues a killed sweep and ``--workers K`` (or several drivers on one storage)
run trials in parallel, each grid point once. Writes summary.csv, summary.md and metric.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from colorlab.cli import error
from colorlab.config import ConfigError, parse_cli
from colorlab.sweep.engine import (
    Driver,
    check_sweep_dir,
    default_storage,
    open_study,
    release_interrupted,
    storage_for,
    subprocess_runner,
    summary_rows,
)
from colorlab.sweep.report import write_summary
from colorlab.sweep.spec import SweepError, load_sweep, parse_sweep


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m colorlab.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, nargs="?", help="a W&B sweep YAML, e.g. sweeps/lambda.yaml")
    parser.add_argument("--count", type=int, help="trials over the whole sweep (default 5; --resume: as before)")
    parser.add_argument("--out", type=Path, help="sweep folder (default runs/sweeps/<name>-<timestamp>)")
    parser.add_argument("--resume", type=Path, metavar="OUT", help="continue the sweep in this folder")
    parser.add_argument("--storage", help="Optuna storage shared by drivers: a database URL or a journal file path "
                                          "(default: sqlite in the sweep folder)")
    parser.add_argument("--workers", type=int, default=1, help="trials run at once by this driver")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random and bayes samplers")
    parser.add_argument("--timeout", type=float, help="seconds before a trial is stopped and counted failed")
    parser.add_argument("overrides", nargs="*", help="key=value passed to every trial (e.g. trainer.max_epochs=2)")
    args = parser.parse_intermixed_args(argv)
    if (args.sweep is None) == (args.resume is None):
        parser.error("give a sweep file (a new sweep) or --resume OUT (an existing one), not both")
    if args.count is not None and args.count < 1 or args.workers < 1:
        parser.error(f"--count and --workers must be >= 1; got {args.count}, {args.workers}")
    return args


def main(argv: list[str] | None = None) -> int:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the driver prints its own line per trial
    args = parse_args(argv)
    try:
        if args.resume is not None:
            record_path = args.resume / "sweep.json"
            if not record_path.is_file():
                raise SweepError(f"--resume {args.resume}: no sweep.json there; is it a sweep folder?")
            record = json.loads(record_path.read_text())
            out, sweep = args.resume, parse_sweep(record["sweep"], str(record_path))
            overrides, storage, count = record["overrides"], record["storage"], args.count or record["count"]
        else:
            sweep = load_sweep(args.sweep)
            parse_cli(args.overrides)  # key=value only, before any trial
            out = args.out or Path("runs/sweeps") / f"{sweep.name}-{datetime.now():%Y%m%d-%H%M%S}"
            overrides, count = args.overrides, args.count or 5
            storage = args.storage or default_storage(out)
            check_sweep_dir(out, {"sweep": sweep.raw, "overrides": overrides, "storage": storage, "count": count})
        study = open_study(sweep, storage_for(storage), args.seed)
    except (SweepError, ConfigError) as e:
        return error("sweep", e)
    released = release_interrupted(study)
    if released:
        print(f"sweep: {released} trial(s) of a killed driver will run again")
    Driver(sweep, study, count, out, subprocess_runner(sweep, overrides, storage, args.timeout)).run(args.workers)
    rows = summary_rows(sweep, study)
    write_summary(rows, sweep.metric, sweep.goal, out)
    print((out / "summary.md").read_text() if rows else "no trials ran")
    print(f"written: {out / 'summary.csv'}, {out / 'summary.md'}, {out / 'metric.png'}")
    return 0 if any(r["state"] in ("finished", "pruned") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
