"""Runs of any length and size: short debug runs, every Trainer argument, schedules from 1 step up,
a final validation, run directories that are never shared, and config mistakes as one line."""

import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from colorlab.config import TRAINER_OWNED, ConfigError, available_experiments, compose, trainer_arguments
from colorlab.fit import main, train
from colorlab.models.base import DIV_FACTOR, FINAL_DIV_FACTOR, OneCycle


class SlowSteps(pl.Callback):
    """Makes every training step take at least ``seconds``, so a max_time stops mid-epoch on any machine."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


def run(experiment, overrides, tmp_path, name, callbacks=None):
    run_dir = tmp_path / name
    cfg = compose(experiment, [*overrides, f"run_dir={run_dir}"])
    train(cfg, callbacks)
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("experiment", sorted(available_experiments()))
def test_short_runs_of_every_experiment_end_with_a_validation_of_their_final_weights(experiment, tmp_path):
    """1 and 3 steps with the experiment's own scheduler, and batch size 1 stopped by max_time mid-epoch:
    each writes a sample grid and metrics.json holding val/* metrics of the weights it ended with."""
    common = ["logger=none", "data.num_workers=0", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
              "data.val_size=4", f"prior.cache_dir={tmp_path / 'priors'}", "prior.max_images=64",
              "embed.weights=random", "embed.size=75", f"embed.cache_dir={tmp_path / 'embeddings'}",
              "trainer.num_sanity_val_steps=0"]
    for steps in (1, 3):
        run_dir, metrics = run(experiment, [*common, "data.batch_size=4", "data.train_size=64",
                                            f"trainer.max_steps={steps}"], tmp_path, f"steps{steps}")
        assert metrics["global_step"] == steps
        assert math.isfinite(metrics["val/ab_error"]) and "val/psnr" in metrics
        assert (run_dir / "samples" / "epoch_000.png").is_file()
        assert metrics["best_checkpoint"] and Path(metrics["best_checkpoint"]).is_file()

    epoch_steps = 32
    run_dir, metrics = run(experiment, [*common, "data.batch_size=1", f"data.train_size={epoch_steps}",
                                        "trainer.max_time={seconds: 1}"], tmp_path, "max_time", [SlowSteps(0.1)])
    assert 0 < metrics["global_step"] < epoch_steps  # stopped by the clock, mid-epoch
    assert math.isfinite(metrics["val/ab_error"])
    assert (run_dir / "samples" / "epoch_000.png").is_file()


def test_every_trainer_argument_is_a_valid_key_and_a_typo_names_the_closest():
    for name in trainer_arguments():
        if name not in TRAINER_OWNED:
            compose("regression_l2", [f"trainer.{name}=null"])  # raises if the key were refused
    cfg = compose("regression_l2", ["trainer.val_check_interval=0.5", "trainer.accumulate_grad_batches=2"])
    assert cfg.trainer.val_check_interval == 0.5 and cfg.trainer.accumulate_grad_batches == 2
    with pytest.raises(ConfigError, match="trainer.max_step'.*did you mean trainer.max_steps"):
        compose("regression_l2", ["trainer.max_step=3"])
    with pytest.raises(ConfigError, match="trainer.logger is set by colorlab; use logger="):
        compose("regression_l2", ["trainer.logger=false"])


def test_a_trainer_argument_never_listed_reaches_lightning(tmp_path):
    """accumulate_grad_batches=2 over 8 batches is 4 optimiser steps."""
    _, metrics = run("regression_l2", ["logger=none", "data.num_workers=0", "trainer.enable_progress_bar=false",
                                       "data.batch_size=4", "data.train_size=32", "data.val_size=4",
                                       "trainer.max_epochs=1", "trainer.accumulate_grad_batches=2"], tmp_path, "acc")
    assert metrics["global_step"] == 4


@pytest.mark.parametrize("total", range(1, 26))
def test_one_cycle_learning_rate_is_finite_and_bounded_for_every_run_length(total):
    lr = 0.003
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = OneCycle(optimizer, max_lr=lr, total_steps=total, warmup=0.1)
    for _ in range(total + 2):  # steps past the end keep the last value
        group = optimizer.param_groups[0]
        assert math.isfinite(group["lr"]) and lr / DIV_FACTOR / FINAL_DIV_FACTOR * (1 - 1e-9) <= group["lr"] <= lr
        assert 0.85 - 1e-9 <= group["betas"][0] <= 0.95 + 1e-9
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("total", [11, 25, 100, 997])
def test_one_cycle_equals_torch_one_cycle_where_that_is_defined(total):
    ours_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.003, betas=(0.9, 0.99))
    ref_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=0.003, betas=(0.9, 0.99))
    ours = OneCycle(ours_opt, max_lr=0.003, total_steps=total, warmup=0.1)
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.003, total_steps=total, pct_start=0.1,
                                              anneal_strategy="cos")
    for _ in range(total):
        assert ours_opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        assert ours_opt.param_groups[0]["betas"] == pytest.approx(ref_opt.param_groups[0]["betas"], rel=1e-12)
        for optimizer, scheduler in ((ours_opt, ours), (ref_opt, ref)):
            optimizer.step()
            scheduler.step()


def write_photos(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        rgb = np.random.default_rng(i).integers(0, 256, (48, 56, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(root / f"{i}.png")
    return root


def test_a_few_photos_train_with_train_size_and_without_it_stop_with_the_counts(tmp_path, capsys):
    photos = write_photos(tmp_path / "photos", 4)  # 3 for training, 1 held out by the hash split
    common = ["logger=none", "data=folder", f"data.root={photos}", "data.num_workers=0", "data.size=32",
              "trainer.enable_progress_bar=false", "trainer.max_epochs=1", "data.batch_size=32"]
    _, metrics = run("regression_l2", [*common, "data.train_size=64"], tmp_path, "sized")
    assert metrics["global_step"] == 2 and "val/ab_error" in metrics

    code = main(["experiment=regression_l2", *common, f"run_dir={tmp_path / 'unsized'}"])
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "3 usable training images" in error and "data.train_size" in error
    assert not (tmp_path / "unsized").exists()  # nothing trained, nothing left behind


def tree_digest(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_existing_run_directory_is_refused_and_left_byte_identical(tmp_path, capsys):
    common = ["experiment=regression_l2", "logger=none", "data.num_workers=0", "trainer.enable_progress_bar=false",
              "data.batch_size=8", "data.train_size=16", "data.val_size=8", "trainer.max_steps=1",
              f"run_dir={tmp_path / 'run'}"]
    assert main(common) == 0
    before = tree_digest(tmp_path / "run")
    assert main(common) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "already holds files of another run" in error and "ckpt_path=last" in error
    assert tree_digest(tmp_path / "run") == before


def cli(*args, cwd=None, env=None):
    return subprocess.Popen([sys.executable, "-m", "colorlab.fit", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def test_two_runs_started_together_get_two_directories(tmp_path):
    args = ["experiment=regression_l2", "logger=none", "data.num_workers=0", "trainer.enable_progress_bar=false",
            "data.batch_size=8", "data.train_size=8", "data.val_size=8", "trainer.max_steps=1"]
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    processes = [cli(*args, cwd=tmp_path, env=env) for _ in range(2)]
    results = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], results
    runs = sorted((tmp_path / "runs" / "regression_l2").iterdir())
    assert len(runs) == 2 and all((r / "metrics.json").is_file() for r in runs)


def test_interpolations_on_the_command_line_are_refused_and_never_saved(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    code = main(["experiment=regression_l2", "description=${oc.env:SECRET_TOKEN}", f"run_dir={tmp_path / 'run'}"])
    error = capsys.readouterr().err
    assert code == 2 and "interpolations" in error and "hunter2" not in error
    assert not (tmp_path / "run").exists()


def one_line_error(code: int, stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("colorlab.fit: error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


def test_config_mistakes_are_one_line_with_exit_code_2(tmp_path, capsys):
    base = ["logger=none", "data.num_workers=0", "trainer.enable_progress_bar=false"]
    photos = write_photos(tmp_path / "one", 1)
    cases = {
        "data.size=abc": (["experiment=regression_l2", "data.size=abc"], "expected an integer"),
        "yaml": (["experiment=regression_l2", "description=[unclosed"], "not valid YAML"),
        "mapping for text": (["experiment=regression_l2", "description=a: b"], "expected a string"),
        "size multiple": (["experiment=eccv16_full", "data.size=65"], "needs a multiple of 8"),
        "weights": (["experiment=koala_mse", "embed.weights=/no/such/irn2.pth"], "embed.weights=/no/such/irn2.pth"),
        "single image": (["experiment=regression_l2", "data=folder", f"data.root={photos}"], "1 usable colour images"),
        "bad precision": (["experiment=regression_l2", "trainer.precision=17"], "Allowed precision values"),
    }
    for name, (args, message) in cases.items():
        code = main([*args, *base, f"run_dir={tmp_path / name}"])
        assert message in one_line_error(code, capsys.readouterr().err), name
        assert not (tmp_path / name).exists(), name


def test_a_checkpoint_of_another_architecture_is_one_line(tmp_path, capsys):
    common = ["experiment=regression_l2", "logger=none", "data.num_workers=0", "trainer.enable_progress_bar=false",
              "data.batch_size=8", "data.train_size=8", "data.val_size=8", "trainer.max_steps=1"]
    assert main([*common, f"run_dir={tmp_path / 'a'}"]) == 0
    code = main([*common, "net.width=8", f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}",
                 f"run_dir={tmp_path / 'b'}"])
    error = one_line_error(code, capsys.readouterr().err)
    assert "another architecture" in error and "net.body.0.0.weight" in error


def test_the_cli_exit_code_of_a_mistake_is_2():
    process = cli("experiment=regression_l2", "data.size=abc")
    _, stderr = process.communicate(timeout=120)
    assert "data.size=abc" in one_line_error(process.returncode, stderr)
