"""Run a W&B sweep YAML offline on Optuna:

``python -m colorlab.sweep SWEEP.yaml [--count N] [--out DIR] [--storage URL|FILE] [--workers K] [--seed S]
[--timeout SECONDS] [RANKING] [key=value ...]``, or ``python -m colorlab.sweep --resume DIR [--count N]
[--workers K] [--seed S] [--timeout SECONDS] [RANKING]`` (the sweep, storage and overrides recorded in DIR);
RANKING: ``[--rank METRIC] [--fid-weights hub|PATH|random] [--lpips-weights hub|PATH|random]``.

The same file works online (``wandb sweep SWEEP.yaml`` + ``wandb agent``). Offline, grid, random and
bayes (TPE) trials are proposed by Optuna from the results so far (``--seed``: the samplers' seed, 0), each
trial a ``colorlab.fit`` subprocess with W&B offline, its own run directory and the ``key=value`` overrides,
stopped and counted failed after ``--timeout`` seconds; ``early_terminate: {type: hyperband}`` prunes
trials from their per-epoch validation metric. ``--count`` trials run over the whole sweep (5; on
``--resume``, the count given before). The study lives in ``DIR/study.db`` (``DIR``: ``--out``, by default
runs/sweeps/<name>-<timestamp>; or ``--storage``: a journal file or a database URL that drivers on several
machines share), so ``--resume DIR`` continues a killed sweep and ``--workers K`` (or several drivers on one
storage) run trials in parallel, each grid point once. Writes summary.csv, summary.md and metric.png.

summary.md is ordered best first by the sweep's metric, or by ``--rank METRIC``: any metric of
``colorlab.compare`` (psnr, delta_cf, colorfulness, auc, ..., fid, lpips; lowest first for fid, lpips,
delta_cf and ab_error*), which is then scored from each finished trial's checkpoints/last.ckpt on its own
validation split after the trials (also on ``--resume``) and added as a column; ``--fid-weights`` and
``--lpips-weights`` as compare's ``evaluate.fid_weights`` (``--rank fid``: hub by default; nothing downloads),
each adding its column. A METRIC that is neither is refused before any trial runs.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

from colorlab.cli import error
from colorlab.config import ConfigError, split_arguments, usage_exit_code
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
from colorlab.sweep.ranking import add_scores, ranking
from colorlab.sweep.report import write_summary
from colorlab.sweep.spec import SweepError, load_sweep, parse_sweep

# the driver's own options, apart from the key=value overrides that every trial's colorlab.fit gets
FLAGS = {"--count": int, "--out": Path, "--resume": Path, "--storage": str, "--workers": int, "--seed": int,
         "--timeout": float, "--rank": str, "--fid-weights": str, "--lpips-weights": str}


def parse_args(argv: list[str]) -> tuple[Path | None, dict, list[str]]:
    """argv -> (the sweep file, None with --resume; the options by flag; the trials' overrides)."""
    options, overrides, files = split_arguments(argv, (), None, "the sweep file", FLAGS)
    given = files + [f"--resume {options['--resume']}"] if "--resume" in options else files
    if len(given) != 1:
        raise ConfigError(f"give one sweep file (a new sweep) or --resume DIR (an existing one). Got {given}")
    recorded = [flag for flag in ("--out", "--storage") if flag in options] + overrides
    if "--resume" in options and recorded:
        raise ConfigError(f"--resume DIR continues with the sweep, storage and overrides recorded in DIR; "
                          f"drop {recorded}")
    if min(options.get("--count", 1), options.get("--workers", 1)) < 1:
        raise ConfigError(f"--count and --workers must be >= 1. Got {options.get('--count')}, "
                          f"{options.get('--workers')}")
    return Path(files[0]) if files else None, options, overrides


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the driver prints its own line per trial
    try:
        sweep_file, options, overrides = parse_args(argv)
        if sweep_file is None:
            resume = options["--resume"]
            record_path = resume / "sweep.json"
            if not record_path.is_file():
                raise SweepError(f"--resume {resume}: no sweep.json there; is it a sweep folder?")
            record = json.loads(record_path.read_text())
            out, sweep = resume, parse_sweep(record["sweep"], str(record_path))
            overrides, storage = record["overrides"], record["storage"]
            count = options.get("--count", record["count"])
        else:
            sweep = load_sweep(sweep_file)
            out = options.get("--out", Path("runs/sweeps") / f"{sweep.name}-{datetime.now():%Y%m%d-%H%M%S}")
            count = options.get("--count", 5)
            storage = options.get("--storage", default_storage(out))
        plan = ranking(sweep, options.get("--rank"), {name: options[f"--{name}-weights"] for name in ("fid", "lpips")
                                                     if f"--{name}-weights" in options})
        if sweep_file is not None:
            check_sweep_dir(out, {"sweep": sweep.raw, "overrides": overrides, "storage": storage, "count": count})
        study = open_study(sweep, storage_for(storage), options.get("--seed", 0))
    except (SweepError, ConfigError) as e:
        return error("sweep", e)
    released = release_interrupted(study)
    if released:
        print(f"sweep: {released} trial(s) of a killed driver will run again")
    runner = subprocess_runner(sweep, overrides, storage, options.get("--timeout"))
    Driver(sweep, study, count, out, runner).run(options.get("--workers", 1))
    rows = summary_rows(sweep, study)
    if plan.scored and rows:
        add_scores(rows, out, plan)
    write_summary(rows, sweep.metric, plan.metric, plan.goal, out)
    print((out / "summary.md").read_text() if rows else "no trials ran")
    print(f"written: {out / 'summary.csv'}, {out / 'summary.md'}, {out / 'metric.png'}")
    if plan.scored and any(r["state"] == "finished" for r in rows) and all(r[plan.metric] is None for r in rows):
        return error("sweep", f"--rank {plan.metric}: no finished trial's checkpoint here gave it (ssim needs "
                              "images of 11 px or more, chroma_bimodal* bimodal masks, auc_rebalanced a prior)")
    return 0 if any(r["state"] in ("finished", "pruned") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
