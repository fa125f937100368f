"""The offline sweep engine: a W&B sweep YAML driven by Optuna.

One Optuna study per sweep directory, in an SQLite file there by default (``study.db``), or in any
Optuna storage that several drivers share (a journal file or a database URL). Each trial is an
Optuna trial: a grid sweep walks the grid in W&B's order, each point once, whichever driver runs
it; random and bayes sweeps ask Optuna's RandomSampler and TPESampler. A trial runs ``colorlab.fit``
as a subprocess (an argument list, no shell) with W&B offline and its own run directory, reports its
validation metric after every epoch (``colorlab.sweep.pruning``) so a Hyperband pruner can stop it,
and is told to the study as complete, pruned (with its partial metric) or failed.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from colorlab.config import TRIAL_ENV
from colorlab.sweep.spec import Sweep, SweepError, trial_argv

WORKER = f"{socket.gethostname()}:{os.getpid()}"
# why a trial that Optuna holds as FAIL does not count towards --count
NOT_COUNTED = ("interrupted", "duplicate")


@dataclass
class Outcome:
    """What one trial gave: state 'complete', 'pruned' or 'failed', and the metric (None if absent)."""

    state: str
    value: float | None = None


# execute(trial, params, run_dir) -> Outcome; the subprocess runner below, or an in-process one in tests
Execute = Callable[[optuna.Trial, dict, Path], Outcome]


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def storage_for(url: str):
    """A URL (sqlite:///, postgresql://...): that database; anything else: the path of a journal file."""
    if "://" in url:
        return url
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(Path(url).expanduser().resolve())))


def pruner_for(early: dict | None) -> optuna.pruners.BasePruner:
    """W&B's early_terminate: {type: hyperband, min_iter, max_iter, eta} -> Optuna's HyperbandPruner."""
    if not early:
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(min_resource=int(early.get("min_iter", 1)),
                                          max_resource=int(early["max_iter"]) if "max_iter" in early else "auto",
                                          reduction_factor=int(early.get("eta", 3)))


def open_study(sweep: Sweep, storage, seed: int = 0) -> optuna.Study:
    samplers = {"grid": optuna.samplers.RandomSampler(seed), "random": optuna.samplers.RandomSampler(seed),
                "bayes": optuna.samplers.TPESampler(seed=seed)}
    return optuna.create_study(study_name=sweep.name, storage=storage, sampler=samplers[sweep.method],
                               pruner=pruner_for(sweep.early_terminate), load_if_exists=True,
                               direction="minimize" if sweep.goal == "minimize" else "maximize")


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    return not (trial.state == TrialState.FAIL and trial.user_attrs.get("reason") in NOT_COUNTED)


def release_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a driver of this machine that is gone (killed): marked failed, not counted,
    so a resumed sweep runs their grid points again. Returns how many."""
    host = socket.gethostname()
    released = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = trial.user_attrs.get("worker", ":").partition(":")
        if worker_host == host and pid.isdigit() and not _alive(int(pid)):
            study._storage.set_trial_user_attr(trial._trial_id, "reason", "interrupted")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            released += 1
    return released


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Driver:
    """Runs trials of one study until ``count`` trials have been counted over the whole sweep (every
    driver sharing the study included) or a grid is exhausted; ``workers`` threads of this process."""

    def __init__(self, sweep: Sweep, study: optuna.Study, count: int, out: Path, execute: Execute):
        self.sweep, self.study, self.count, self.out, self.execute = sweep, study, count, out, execute
        self.grid = list(itertools.product(*sweep.grid.values())) if sweep.grid is not None else None
        self._lock = threading.Lock()

    def run(self, workers: int = 1) -> None:
        threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(max(1, workers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _loop(self) -> None:
        while (claimed := self._next_trial()) is not None:
            trial, params = claimed
            run_dir = self.out / f"trial-{trial.number:03d}"
            print(f"sweep: trial {trial.number}: {' '.join(f'{k}={v}' for k, v in params.items())}", flush=True)
            try:
                outcome = self.execute(trial, params, run_dir)
            except Exception as e:  # the runner itself broke: record it, keep the sweep going
                outcome = Outcome("failed")
                trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
            self._tell(trial, outcome)

    def _next_trial(self) -> tuple[optuna.Trial, dict] | None:
        with self._lock:
            while True:
                trials = [t for t in self.study.get_trials(deepcopy=False) if counted(t)]
                if len(trials) >= self.count:
                    return None
                if self.grid is None:
                    trial = self.study.ask()
                    trial.set_user_attr("worker", WORKER)
                    params = {p.name: p.suggest(trial) for p in self.sweep.params}
                    trial.set_user_attr("values", params)
                    return trial, params
                used = {t.user_attrs.get("grid_index") for t in trials}
                free = [i for i in range(len(self.grid)) if i not in used]
                if not free:
                    return None
                index = free[0]
                values = dict(zip(self.sweep.grid, self.grid[index], strict=True))
                # a new RUNNING trial holding the point's values (numbers are given out atomically by the
                # storage); suggest() then returns those values
                template = optuna.trial.create_trial(
                    state=TrialState.RUNNING, params=values,
                    distributions={k: CategoricalDistribution(v) for k, v in self.sweep.grid.items()},
                    user_attrs={"grid_index": index, "worker": WORKER, "values": values})
                trial = optuna.Trial(self.study, self.study._storage.create_new_trial(self.study._study_id, template))
                params = {p.name: p.suggest(trial) for p in self.sweep.params}
                # another driver may have claimed the same point at the same moment: the lower number keeps it
                rivals = [t for t in self.study.get_trials(deepcopy=False) if counted(t) and t.number < trial.number
                          and t.user_attrs.get("grid_index") == index]
                if not rivals:
                    return trial, params
                trial.set_user_attr("reason", "duplicate")
                self.study.tell(trial, state=TrialState.FAIL)

    def _tell(self, trial: optuna.Trial, outcome: Outcome) -> None:
        if outcome.value is not None:
            trial.set_user_attr("metric", outcome.value)
        if outcome.state == "complete" and outcome.value is not None:
            self.study.tell(trial, outcome.value)
        elif outcome.state == "pruned":
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)
        print(f"sweep: trial {trial.number} {outcome.state}"
              + (f": {self.sweep.metric}={outcome.value:.4g}" if outcome.value is not None else ""), flush=True)


def subprocess_runner(sweep: Sweep, overrides: list[str], storage: str, timeout: float | None) -> Execute:
    """Each trial: ``python -m colorlab.fit ...`` with W&B offline, the sweep's name as W&B group, its own
    run_dir, and TRIAL_ENV so that it reports its per-epoch metric to the study (pruning)."""

    def execute(trial: optuna.Trial, params: dict, run_dir: Path) -> Outcome:
        argv = trial_argv(sweep, params, [*overrides, f"run_dir={run_dir}", f"+logger.group={sweep.name}"])
        report_to = {"storage": storage, "study": sweep.name, "trial_id": trial._trial_id,
                     "metric": sweep.metric, "early_terminate": sweep.early_terminate}
        env = {**os.environ, "WANDB_MODE": "offline", TRIAL_ENV: json.dumps(report_to)}
        try:
            result = subprocess.run(argv, env=env, timeout=timeout, capture_output=True, text=True)
            returncode, log = result.returncode, result.stdout + result.stderr
        except subprocess.TimeoutExpired as e:
            returncode, log = -1, f"timed out after {timeout} s\n{e.stdout or ''}{e.stderr or ''}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "trial.log").write_text(log if isinstance(log, str) else log.decode(errors="replace"))
        value = read_metric(run_dir, sweep.metric)
        if returncode != 0 or value is None:
            print(f"sweep: trial {trial.number} failed (exit {returncode}); see {run_dir / 'trial.log'}", flush=True)
            return Outcome("failed", value)
        pruned = trial.study._storage.get_trial(trial._trial_id).user_attrs.get("pruned_at_epoch") is not None
        return Outcome("pruned" if pruned else "complete", value)

    return execute


def read_metric(run_dir: Path, name: str) -> float | None:
    import math

    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text()).get(name)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def summary_rows(sweep: Sweep, study: optuna.Study) -> list[dict]:
    """One row per counted trial: its parameters, the metric (partial for pruned trials) and state."""
    names = {TrialState.COMPLETE: "finished", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
             TrialState.RUNNING: "running"}
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if not counted(trial) or trial.state not in names:
            continue
        values = trial.user_attrs.get("values", {})
        rows.append({"trial": f"trial-{trial.number:03d}", **{p.name: values.get(p.name) for p in sweep.params},
                     sweep.metric: trial.user_attrs.get("metric"), "state": names[trial.state]})
    return rows


def _read_record(path: Path, wait_s: float = 10.0) -> dict:
    """sweep.json as another driver wrote it; where it may still be writing (no hard links), wait for it."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            if time.monotonic() > deadline:
                raise SweepError(f"{path} is not a sweep record (invalid JSON: {e}); give a new --out") from None
            time.sleep(0.1)


def check_sweep_dir(out: Path, record: dict) -> None:
    """A sweep directory belongs to one sweep: a driver may join it only with the same file and overrides."""
    path = out / "sweep.json"
    out.mkdir(parents=True, exist_ok=True)
    # written whole, then linked into place: atomic and exclusive, so a driver starting at the same moment (an
    # sbatch --array) never reads a half-written record
    text = json.dumps(record, indent=2)
    draft = out / f".sweep.json.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}"
    draft.write_text(text)
    try:
        os.link(draft, path)
        return
    except FileExistsError:
        pass
    except OSError:  # no hard links on this file system (FAT, some network or FUSE mounts): create, then write
        try:
            with open(path, "x") as f:
                f.write(text)
            return
        except FileExistsError:
            pass
    finally:
        draft.unlink(missing_ok=True)
    existing = _read_record(path)
    same = {k: existing.get(k) for k in ("sweep", "overrides", "storage")} == {
        k: record.get(k) for k in ("sweep", "overrides", "storage")}
    if not same:
        raise SweepError(f"{out} holds another sweep (its sweep.json differs in the sweep file, overrides or "
                         f"storage); give a new --out, or continue that sweep with --resume {out}")
