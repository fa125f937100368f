"""``--rank METRIC``: a sweep's summary ordered by its own metric or by any comparison metric.

A comparison metric (``colorlab.evaluation.side_by_side``: the colour metrics, FID, LPIPS) that training
does not log is scored after the trials: each finished trial's final weights (``trial-NNN/checkpoints/
last.ckpt``, the weights its metrics.json describes) on its own validation split, as ``colorlab.compare``
scores a checkpoint. FID and LPIPS take their weights like compare's ``evaluate.fid_weights`` (hub, a path
or random); a given ``--fid-weights``/``--lpips-weights`` adds that column too.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from colorlab.config import ConfigError
from colorlab.sweep.spec import Sweep


@dataclass
class Ranking:
    """The column summary.md is ordered by (best first by ``goal``) and the metrics scored to add."""

    metric: str
    goal: str  # minimize | maximize
    scored: list[str] = field(default_factory=list)  # comparison metrics added as columns, in their order
    weights: dict[str, str] = field(default_factory=dict)  # {'fid': ..., 'lpips': ...}: hub, a path or random


def ranking(sweep: Sweep, rank: str | None = None, weights: dict[str, str] | None = None) -> Ranking:
    """The ranking ``--rank`` and the metric weights ask for, checked before any trial runs. ConfigError: a
    metric that is neither the sweep's nor a comparison metric (naming the valid ones), or missing FID or
    LPIPS weights (naming the three ways to give them)."""
    weights = dict(weights or {})
    if rank in (None, sweep.metric) and not weights:
        return Ranking(sweep.metric, sweep.goal)
    from colorlab.evaluation.metric_nets import MetricWeightsError, weights_file
    from colorlab.evaluation.side_by_side import COMPARISON_METRICS, lower_is_better

    if rank in (None, sweep.metric):
        metric, goal = sweep.metric, sweep.goal
    elif rank in COMPARISON_METRICS:
        metric, goal = rank, "minimize" if lower_is_better(rank) else "maximize"
        if rank in ("fid", "lpips"):
            weights.setdefault(rank, "hub")  # evaluate.fid_weights' default
    else:
        raise ConfigError(f"--rank {rank}: neither the sweep's metric nor a comparison metric; valid: "
                          f"{', '.join([sweep.metric, *COMPARISON_METRICS])}")
    try:
        for name, source in weights.items():  # random: the warning names the sweep's option, here and once
            weights_file(name, source, f"--{name}-weights ")
    except MetricWeightsError as e:
        raise ConfigError(str(e)) from None
    scored = [m for m in COMPARISON_METRICS if m == metric or m in weights]
    return Ranking(metric, goal, scored, weights)


def add_scores(rows: list[dict], out: Path, plan: Ranking) -> None:
    """``plan.scored`` added to every summary row (before 'state'): scored from each finished trial's
    ``out/trial-NNN/checkpoints/last.ckpt``, None for the other trials and for checkpoints not here (a
    trial run by a driver on another machine)."""
    from colorlab.checkpoints import last_checkpoint
    from colorlab.evaluation.side_by_side import score_checkpoints

    finished = [row["trial"] for row in rows if row["state"] == "finished"]
    here = [trial for trial in finished if last_checkpoint(out / trial).is_file()]
    print(f"sweep: scoring {', '.join(plan.scored)} of {len(here)} finished trial(s)"
          + (f"; no checkpoint here for {', '.join(sorted(set(finished) - set(here)))}" if len(here) < len(finished)
             else ""), flush=True)
    with warnings.catch_warnings():  # ranking() warned of random weights, naming --fid/lpips-weights
        warnings.filterwarnings("ignore", message=r"evaluate\.\w+_weights=random")
        scores = score_checkpoints([last_checkpoint(out / trial) for trial in here], weights=plan.weights,
                                   shared_data=False)
    by_trial = {trial: s.metrics for trial, s in zip(here, scores, strict=True)}
    for row in rows:
        state = row.pop("state")
        row.update({m: by_trial.get(row["trial"], {}).get(m) for m in plan.scored})
        row["state"] = state
