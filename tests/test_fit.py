"""End-to-end training runs through the same path as `python -m colorlab.fit`."""

import json

import pytest
import torch

from colorlab.config import available_experiments, compose
from colorlab.fit import train
from colorlab.models import load_colorizer


@pytest.mark.parametrize("experiment", sorted(available_experiments()))
def test_every_experiment_runs_fast_dev_run(experiment, tiny_overrides):
    metrics = train(compose(experiment, overrides=tiny_overrides + ["trainer.fast_dev_run=true"]))
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))


def test_run_dir_contents_and_checkpoint_reload(tiny_overrides, tmp_path):
    # mode=max on an error: the "best" checkpoint stays at epoch 0, last.ckpt must still move on
    cfg = compose("regression_l2", overrides=tiny_overrides + ["trainer.max_epochs=2", "checkpoint.mode=max"])
    metrics = train(cfg)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file()
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert [p.name for p in (run / "checkpoints").glob("best-*.ckpt")] == ["best-000.ckpt"]
    assert list((run / "samples").glob("epoch_001.png"))
    summary = json.loads((run / "metrics.json").read_text())
    assert last["global_step"] == summary["global_step"] > 0
    assert summary["val/psnr"] == pytest.approx(metrics["val/psnr"])
    assert {"val/loss", "val/psnr", "val/colorfulness", "val/ab_error"} <= summary.keys()
    model = load_colorizer(summary["best_checkpoint"])
    assert model.config["experiment"] == "regression_l2"
    with pytest.raises(ValueError, match="not a colorlab checkpoint"):
        torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
        load_colorizer(tmp_path / "other.ckpt")


def test_same_seed_same_metrics(tiny_overrides, tmp_path):
    runs = []
    for name in ("a", "b"):
        overrides = tiny_overrides + ["trainer.max_epochs=1", f"run_dir={tmp_path / name}"]
        runs.append(train(compose("regression_l2", overrides=overrides)))
    assert runs[0] == runs[1]


def test_short_training_beats_gray_on_held_out_scenes(tmp_path):
    """Validation scenes come from a random stream disjoint from training: this is generalisation."""
    overrides = [f"run_dir={tmp_path}", "logger=none", "data.size=32", "data.train_size=1024",
                 "data.val_size=128", "data.num_workers=0", "trainer.max_epochs=3",
                 "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
    metrics = train(compose("regression_l2", overrides=overrides))
    assert metrics["val/ab_error"] < 0.7 * metrics["val/ab_error_gray"], metrics
