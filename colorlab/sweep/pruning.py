"""A trial's side of pruning: ``colorlab.fit`` reports its validation metric to the sweep's study
after every epoch and stops (within that epoch) when the pruner says so."""

from __future__ import annotations

import json
import math
import os

import pytorch_lightning as pl

from colorlab.config import TRIAL_ENV
from colorlab.sweep.engine import pruner_for, storage_for


def report(trial, value: float, step: int) -> bool:
    """Report ``value`` at ``step`` (an epoch); whether the pruner stops the trial now."""
    trial.report(value, step)
    if trial.should_prune():
        trial.set_user_attr("pruned_at_epoch", step)
        return True
    return False


class ReportToSweep(pl.Callback):
    """Reports ``metric`` after each validation of a fitting run; a pruned trial stops its run (which
    then validates its final weights, so the pruned trial keeps its partial metrics)."""

    def __init__(self, trial, metric: str):
        self.trial, self.metric = trial, metric

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = trainer.state.fn == "fit"  # not a trainer.validate() after fitting
        if trainer.sanity_checking or not fitting:
            return
        value = trainer.callback_metrics.get(self.metric)  # synchronised across DDP ranks
        prune = False
        if trainer.is_global_zero and value is not None and math.isfinite(float(value)):
            prune = report(self.trial, float(value), trainer.current_epoch)  # one report per epoch, by rank 0
        if trainer.strategy.broadcast(prune, src=0):  # every rank stops together
            trainer.should_stop = True


def callbacks_from_env() -> list[pl.Callback]:
    """The reporting callback when this run is a trial of an offline sweep (TRIAL_ENV set), else none."""
    spec = os.environ.get(TRIAL_ENV)
    if not spec:
        return []
    import optuna

    spec = json.loads(spec)
    study = optuna.load_study(study_name=spec["study"], storage=storage_for(spec["storage"]),
                              pruner=pruner_for(spec["early_terminate"]))
    return [ReportToSweep(optuna.Trial(study, spec["trial_id"]), spec["metric"])]
