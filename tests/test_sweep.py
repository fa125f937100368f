"""Offline sweeps on Optuna, driven by W&B sweep YAMLs: parameter forms, malformed files, grids, parallel
drivers, resume after SIGKILL, bayes against random, Hyperband pruning, real colorlab.fit trials, and the
summary ranked by a metric scored from the trials' checkpoints."""

import csv
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml

from colorlab.config import parse_cli
from colorlab.sweep.__main__ import main as sweep_main
from colorlab.sweep.engine import Driver, Outcome, open_study
from colorlab.sweep.pruning import ReportToSweep, report
from colorlab.sweep.spec import SweepError, load_sweep, parse_sweep, trial_argv

optuna.logging.set_verbosity(optuna.logging.WARNING)
FIT = ["${env}", "python", "-m", "colorlab.fit", "experiment=regression_l2", "${args_no_hyphens}"]


def sweep_of(parameters, method="random", goal="minimize", **extra):
    return parse_sweep({"name": "toy", "program": "colorlab/fit.py", "method": method,
                        "metric": {"name": "objective", "goal": goal}, "parameters": parameters,
                        "command": FIT, **extra})


def draws(spec, n=300, seed=0):
    sweep = sweep_of({"p": spec})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed))
    values = []
    for _ in range(n):
        trial = study.ask()
        values.append(sweep.params[0].suggest(trial))
        study.tell(trial, 0.0)
    return np.array(values, dtype=object)


def test_every_wandb_parameter_form_samples_within_its_support():
    assert set(draws({"values": [1, "a", 2.5]}, 100)) == {1, "a", 2.5}
    assert set(draws({"value": 7}, 5)) == {7}
    ints = draws({"min": 2, "max": 5})
    assert all(isinstance(v, int) for v in ints) and set(ints) == {2, 3, 4, 5}
    floats = draws({"min": 0.5, "max": 1.5}).astype(float)
    assert floats.min() >= 0.5 and floats.max() <= 1.5 and floats.std() > 0.2  # spread over the range
    q = draws({"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25}).astype(float)
    assert set(np.round(q, 9)) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    logv = draws({"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}).astype(float)
    assert logv.min() >= 1e-4 and logv.max() <= 1e-1
    assert abs(np.log10(logv).mean() - (-2.5)) < 0.15  # uniform in the exponent, not in the value
    loge = draws({"distribution": "log_uniform", "min": 0.0, "max": 2.0}).astype(float)
    assert loge.min() >= 1.0 and loge.max() <= math.exp(2.0)
    inv = draws({"distribution": "inv_log_uniform_values", "min": 2.0, "max": 50.0}).astype(float)
    assert inv.min() >= 2.0 - 1e-9 and inv.max() <= 50.0 + 1e-9
    normal = draws({"distribution": "normal", "mu": 3.0, "sigma": 2.0}, 2000).astype(float)
    assert abs(normal.mean() - 3.0) < 0.2 and abs(normal.std() - 2.0) < 0.2
    qn = draws({"distribution": "q_normal", "mu": 0.0, "sigma": 5.0, "q": 2.0}).astype(float)
    assert np.allclose(qn / 2.0, np.round(qn / 2.0))
    lognormal = draws({"distribution": "log_normal", "mu": 0.0, "sigma": 0.5}, 2000).astype(float)
    assert lognormal.min() > 0 and abs(np.log(lognormal).mean()) < 0.05


@pytest.mark.parametrize("spec, message", [
    ({"distribution": "beta", "min": 0, "max": 1}, "distribution 'beta' is not supported"),
    ({"distribution": "q_log_uniform_values", "min": 1, "max": 9, "q": 1}, "not supported"),
    ({"min": 1.0, "max": 0.5}, "min must be below max"),
    ({"distribution": "int_uniform", "min": 0.5, "max": 3}, "integer min and max"),
    ({"distribution": "log_uniform_values", "min": 0, "max": 1}, "needs min > 0"),
    ({"distribution": "normal", "sigma": -1}, "sigma > 0"),
    ({"values": []}, "non-empty list"),
    ("0.5", "expected a mapping"),
])
def test_unsupported_or_malformed_parameters_are_refused_by_name(spec, message):
    with pytest.raises(SweepError, match=message) as error:
        sweep_of({"model.lam": spec})
    assert "parameter model.lam" in str(error.value) and "Valid forms" in str(error.value)


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("- a\n- b\n", "must hold a mapping"),
    ("program: colorlab/fit.py\nmethod: grid\nparameters: {x: {values: [1]}}\n", r"lacks \['metric'\]"),
    ("method: grid\nmetric: {name: m}\nparameters: {x: {values: [1]}}\n", r"lacks \['program'\]"),
    ("program: p\nmethod: hyperopt\nmetric: {name: m}\nparameters: {x: {values: [1]}}\n", "method='hyperopt'"),
    ("program: p\nmethod: grid\nmetric: {name: m}\nparameters: {x: {min: 0.0, max: 1.0}}\n", "grid sweep needs"),
    ("program: p\nmethod: grid\nmetric: {name: m}\nparameters: {x: {values: [1]}}\ncommand: python -m colorlab.fit\n",
     "command must be a list"),
])
def test_malformed_sweep_files_are_one_clear_error_before_any_trial(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SweepError, match=message):
        load_sweep(path)
    assert sweep_main([str(path), "--out", str(tmp_path / "out")]) == 2
    assert "colorlab.sweep: error:" in capsys.readouterr().err and not (tmp_path / "out" / "trial-000").exists()


def test_trial_commands_are_argument_lists_of_colorlab_fit_only():
    sweep = load_sweep(Path("sweeps/lambda.yaml"))
    argv = trial_argv(sweep, {"model.lam": 0.25}, ["trainer.max_epochs=1"])
    assert argv == [sys.executable, "-m", "colorlab.fit", "experiment=unet_bins", "model.lam=0.25",
                    "trainer.max_epochs=1"]
    default = parse_sweep({**sweep.raw, "command": ["${env}", "${interpreter}", "${program}", "${args}"]})
    argv = trial_argv(default, {"model.lam": 0.5}, [])
    assert argv[:3] == [sys.executable, "-m", "colorlab.fit"]
    assert parse_cli(argv[3:])[1] == ["model.lam=0.5"]  # W&B's --key=value is understood by colorlab.fit
    for command in (["${env}", "python", "train.py", "${args}"], ["bash", "-c", "rm -rf /"]):
        with pytest.raises(SweepError, match="a trial must run colorlab.fit"):
            trial_argv(parse_sweep({**sweep.raw, "command": command}), {"model.lam": 0.5}, [])


def toy_execute(objective, seen=None, delay=0.0):
    def execute(trial, params, run_dir):
        if seen is not None:
            seen.append(params["x"])
        time.sleep(delay)
        return Outcome("complete", objective(params["x"]))
    return execute


def test_a_grid_of_5_points_with_count_10_runs_exactly_5_trials(tmp_path):
    sweep = sweep_of({"x": {"values": [0.0, 0.1, 0.2, 0.3, 0.4]}}, method="grid")
    seen = []
    study = open_study(sweep, None)
    Driver(sweep, study, 10, tmp_path, toy_execute(lambda x: x, seen)).run()
    assert seen == [0.0, 0.1, 0.2, 0.3, 0.4] and len(study.trials) == 5


def test_two_drivers_on_one_sqlite_study_run_disjoint_grid_points(tmp_path):
    sweep = sweep_of({"x": {"values": list(range(8))}}, method="grid")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    seen = []
    drivers = [Driver(sweep, open_study(sweep, storage), 8, tmp_path, toy_execute(float, seen, delay=0.05))
               for _ in range(2)]
    threads = [threading.Thread(target=d.run, kwargs={"workers": 2}) for d in drivers]  # 4 trials at a time
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(seen) == list(range(8))  # every point once, none twice


def best_after(method, seed, count=40):
    sweep = sweep_of({"x": {"min": -3.0, "max": 3.0}, "y": {"min": -3.0, "max": 3.0}}, method=method)
    study = open_study(sweep, None, seed=seed)

    def execute(trial, params, run_dir):
        return Outcome("complete", (params["x"] - 1.2) ** 2 + (params["y"] + 0.7) ** 2)

    Driver(sweep, study, count, Path("unused"), execute).run()
    return study.best_value


@pytest.mark.parametrize("hard_links", [True, False], ids=["hard links", "no hard links"])
def test_two_drivers_starting_at_once_never_read_a_half_written_sweep_json(tmp_path, monkeypatch, hard_links):
    """sbatch --array starts drivers together: the second once read sweep.json after the first had created it
    and before it had written it (JSONDecodeError, seen in CI). Writing is slowed here to hold that window open.
    Without hard links (FAT, some network mounts) the file is created, then written, and a reader waits."""
    from colorlab.sweep import engine

    if not hard_links:
        def no_link(src, dst):
            raise PermissionError(1, "Operation not permitted")

        monkeypatch.setattr(engine.os, "link", no_link)

    slow_dumps, slow_dump = engine.json.dumps, engine.json.dump

    def dumps(*args, **kwargs):
        time.sleep(0.3)
        return slow_dumps(*args, **kwargs)

    def dump(*args, **kwargs):
        time.sleep(0.3)
        return slow_dump(*args, **kwargs)

    monkeypatch.setattr(engine.json, "dumps", dumps)
    monkeypatch.setattr(engine.json, "dump", dump)
    record = {"sweep": {"name": "x"}, "overrides": [], "storage": None, "count": 5}
    errors = []

    def driver(delay):
        time.sleep(delay)
        try:
            engine.check_sweep_dir(tmp_path / "sweep", record)
        except Exception as e:  # noqa: BLE001 -- any failure of either driver fails the test
            errors.append(e)

    threads = [threading.Thread(target=driver, args=(delay,)) for delay in (0.0, 0.1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text()) == record
    assert [p.name for p in (tmp_path / "sweep").iterdir()] == ["sweep.json"]  # no draft left behind


def test_a_sweep_record_still_being_written_is_waited_for_and_a_broken_one_named(tmp_path):
    from colorlab.sweep.engine import _read_record

    path = tmp_path / "sweep.json"
    path.write_text("")  # created by another driver, not yet written
    writer = threading.Timer(0.3, lambda: path.write_text('{"sweep": 1}'))
    writer.start()
    assert _read_record(path) == {"sweep": 1}
    writer.join()
    path.write_text('{"swe')
    with pytest.raises(SweepError, match="sweep.json is not a sweep record .invalid JSON"):
        _read_record(path, wait_s=0.3)


def test_bayes_finds_a_better_optimum_than_random_at_the_same_count():
    wins = sum(best_after("bayes", seed) < best_after("random", seed) for seed in range(10))
    assert wins >= 8, wins


def test_hyperband_prunes_trials_whose_per_epoch_metric_is_clearly_worse(tmp_path):
    sweep = sweep_of({"x": {"min": 0.0, "max": 1.0}}, early_terminate={"type": "hyperband", "min_iter": 1,
                                                                        "max_iter": 9, "eta": 3})
    study = open_study(sweep, None, seed=1)
    epochs_run = {}

    def execute(trial, params, run_dir):
        value = None
        for epoch in range(9):
            value = params["x"] + 1.0 / (epoch + 1)  # lower x is better at every epoch
            epochs_run[trial.number] = epoch + 1
            if report(trial, value, epoch):
                return Outcome("pruned", value)
        return Outcome("complete", value)

    Driver(sweep, study, 30, tmp_path, execute).run()
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert pruned and complete
    assert all(epochs_run[t.number] < 9 and t.user_attrs["metric"] is not None for t in pruned)  # partial metric kept
    best_pruned_x = min(t.user_attrs["values"]["x"] for t in pruned)
    assert min(t.user_attrs["values"]["x"] for t in complete) < best_pruned_x


TINY = ["logger=none", "data.num_workers=0", "trainer.enable_progress_bar=false", "data.batch_size=8",
        "data.train_size=16", "data.val_size=8", "trainer.num_sanity_val_steps=0"]


def test_a_pruned_colorlab_fit_run_stops_within_an_epoch_and_keeps_its_metrics(tmp_path):
    from colorlab.config import compose
    from colorlab.fit import train

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=-1.0))  # prunes any value > -1
    trial = study.ask()
    cfg = compose("regression_l2", [*TINY, "trainer.max_epochs=4", f"run_dir={tmp_path / 'run'}"])
    metrics = train(cfg, callbacks=[ReportToSweep(trial, "val/ab_error")])
    assert trial.user_attrs["pruned_at_epoch"] == 0
    assert math.isfinite(metrics["val/ab_error"])
    assert study.trials[0].intermediate_values.keys() == {0}  # one report: it stopped after its first epoch


def grid_file(tmp_path, lrs):
    """A grid sweep over optim.lr of regression_l2, minimising val/ab_error."""
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "name": "grid", "program": "colorlab/fit.py", "method": "grid",
        "metric": {"name": "val/ab_error", "goal": "minimize"},
        "parameters": {"optim.lr": {"values": lrs}}, "command": FIT}))
    return path


def test_sigkill_of_the_driver_then_resume_runs_each_grid_point_once(tmp_path):
    sweep_file = grid_file(tmp_path, [0.001, 0.002, 0.003])
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "colorlab.sweep", str(sweep_file), "--count", "3", "--out", str(out),
               *TINY, "trainer.max_steps=2"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    driver = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    deadline = time.time() + 240
    while not (out / "trial-001").exists() and time.time() < deadline:  # the first trial is done, the second runs
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    finished_before = {t.number for t in optuna.load_study(study_name="grid", storage=f"sqlite:///{out / 'study.db'}")
                       .get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    assert finished_before, "the first trial should have finished before the kill"

    resumed = subprocess.run([sys.executable, "-m", "colorlab.sweep", "--resume", str(out)], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert sorted(float(r["optim.lr"]) for r in rows) == [0.001, 0.002, 0.003]
    assert all(r["state"] == "finished" for r in rows)
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{out / 'study.db'}")
    assert finished_before <= {t.number for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}


def test_lambda_sweep_runs_colorlab_fit_offline(tmp_path):
    code = sweep_main(["sweeps/lambda.yaml", "--count", "2", "--out", str(tmp_path / "sw"), *TINY,
                       "trainer.max_epochs=1"])
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "sw" / "summary.csv")))
    assert [r["model.lam"] for r in rows] == ["0.0", "0.25"] and all(r["state"] == "finished" for r in rows)
    assert 0 < float(rows[0]["val/auc_rebalanced"]) <= 1
    assert (tmp_path / "sw" / "metric.png").stat().st_size > 0
    # the same folder with another sweep is refused; the same sweep joins it (nothing left to run)
    assert sweep_main(["sweeps/bins.yaml", "--out", str(tmp_path / "sw"), *TINY]) == 2


def summary_tables(out):
    """(summary.csv's rows, summary.md's title, summary.md's rows as column -> cell)."""
    rows = list(csv.DictReader(open(out / "summary.csv")))
    title, _, header, _, *lines = (out / "summary.md").read_text().splitlines()
    columns = [c.strip() for c in header.strip("|").split("|")]
    return rows, title, [dict(zip(columns, (c.strip() for c in line.strip("|").split("|")), strict=True))
                         for line in lines]


@pytest.mark.filterwarnings("ignore:--fid-weights random")  # named once, by the sweep's option
@pytest.mark.filterwarnings("error:evaluate.fid_weights=random")  # not compare's, per trial
def test_rank_by_fid_or_psnr_scores_each_finished_trials_checkpoint_and_orders_the_summary(tmp_path):
    out = tmp_path / "sweep"
    tiny = [*TINY, "data.val_size=4", "data.size=32", "net.width=8", "trainer.max_steps=2"]
    assert sweep_main([str(grid_file(tmp_path, [0.001, 0.03])), "--count", "2", "--out", str(out), "--rank", "fid",
                       "--fid-weights", "random", *tiny]) == 0
    rows, title, table = summary_tables(out)
    assert list(rows[0]) == ["trial", "optim.lr", "val/ab_error", "fid", "state"]
    fid = {r["trial"]: float(r["fid"]) for r in rows}
    assert all(math.isfinite(v) and v > 0 for v in fid.values()) and len(set(fid.values())) == 2
    assert title.endswith(": fid (minimize), best first")
    assert [r["trial"] for r in table] == sorted(fid, key=fid.get)  # lowest FID first

    # on --resume (nothing left to run): PSNR, each trial's checkpoint on its own validation split, equals
    # what its training validated (metrics.json), highest first
    assert sweep_main(["--resume", str(out), "--rank", "psnr"]) == 0
    rows, title, table = summary_tables(out)
    psnr = {r["trial"]: float(r["psnr"]) for r in rows}
    for trial, value in psnr.items():
        saved = json.loads((out / trial / "metrics.json").read_text())
        assert value == pytest.approx(saved["val/psnr"], rel=1e-4)
    assert title.endswith(": psnr (maximize), best first") and "fid" not in rows[0]
    assert [r["trial"] for r in table] == sorted(psnr, key=psnr.get, reverse=True)

    # without --rank: the sweep's metric, its columns only
    assert sweep_main(["--resume", str(out)]) == 0
    rows, title, table = summary_tables(out)
    assert list(rows[0]) == ["trial", "optim.lr", "val/ab_error", "state"]
    error = {r["trial"]: float(r["val/ab_error"]) for r in rows}
    assert title.endswith(": val/ab_error (minimize), best first")
    assert [r["trial"] for r in table] == sorted(error, key=error.get)
