import csv
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("sweeps", reason="install colorlab[sweep] (W&B's search engine) for offline sweeps")

from colorlab.sweep import main as sweep_main  # noqa: E402
from colorlab.sweep import run_sweep, trial_command  # noqa: E402

OBJECTIVE = Path(__file__).with_name("sweep_objective.py")


def objective_sweep(tmp_path, method="bayes"):
    path = tmp_path / "objective.yaml"
    path.write_text(yaml.safe_dump({
        "name": "objective", "program": str(OBJECTIVE), "method": method,
        "metric": {"name": "objective", "goal": "minimize"},
        "parameters": {"x": {"distribution": "uniform", "min": 0.0, "max": 1.0}},
        "command": ["${env}", "python", str(OBJECTIVE), "${args_no_hyphens}"],
    }))
    return path


def test_bayes_sweep_moves_towards_the_optimum(tmp_path):
    rows = run_sweep(objective_sweep(tmp_path), count=16, overrides=[], out=tmp_path / "out")
    values = [r["objective"] for r in rows if r["objective"] is not None]
    assert len(rows) == 16
    first, last = values[:5], values[-5:]
    assert sum(last) / len(last) < sum(first) / len(first), values  # the engine sees the results
    assert min(abs(r["x"] - 0.3) for r in rows) < 0.1


def test_failed_trials_are_recorded_and_the_sweep_goes_on(tmp_path):
    sweep = objective_sweep(tmp_path, method="grid")
    sweep.write_text(sweep.read_text().replace("distribution: uniform\n    max: 1.0\n    min: 0.0",
                                               "values: [0.99, 0.3, 0.5]"))
    rows = run_sweep(sweep, count=5, overrides=[], out=tmp_path / "out")
    assert [r["state"] for r in rows] == ["failed", "finished", "finished"]  # the grid has 3 points
    assert rows[1]["objective"] == pytest.approx(0.0)
    with open(tmp_path / "out" / "summary.csv") as f:
        assert [row["state"] for row in csv.DictReader(f)] == ["failed", "finished", "finished"]
    assert "| trial-000 | 0.99 | — | failed |" in (tmp_path / "out" / "summary.md").read_text()
    assert (tmp_path / "out" / "metric.png").stat().st_size > 0


def test_trial_command_fills_wandb_macros(tmp_path):
    sweep = yaml.safe_load(Path("sweeps/lambda.yaml").read_text())
    command = trial_command(sweep, {"model.lam": 0.25}, ["trainer.max_epochs=1"], tmp_path, "lambda")
    assert command[:4] == [sys.executable, "-m", "colorlab.fit", "experiment=unet_bins"]
    assert command[4:] == ["model.lam=0.25", "trainer.max_epochs=1", f"run_dir={tmp_path}", "+logger.group=lambda"]


@pytest.mark.slow
def test_lambda_sweep_runs_colorlab_fit_offline(tmp_path, tiny_overrides, capsys):
    overrides = [o for o in tiny_overrides if not o.startswith("run_dir=")] + ["trainer.max_epochs=1"]
    code = sweep_main(["sweeps/lambda.yaml", "--count", "2", "--out", str(tmp_path / "sw"), *overrides])
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "sw" / "summary.csv")))
    assert [r["model.lam"] for r in rows] == ["0.0", "0.25"] and all(r["state"] == "finished" for r in rows)
    assert 0 < float(rows[0]["val/auc_rebalanced"]) <= 1
