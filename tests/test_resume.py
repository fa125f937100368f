"""Resuming: a run killed with SIGKILL and resumed ends with the same weights; bad checkpoints stop clearly."""

import subprocess
import sys
import time

import pytest
import torch

TIMEOUT = 300
COMMON = ["experiment=regression_l2", "logger=none", "data.num_workers=0", "data.train_size=1024", "data.val_size=16",
          "data.batch_size=16", "trainer.max_epochs=3", "trainer.deterministic=true",
          "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0"]


def fit(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "colorlab.fit", *args], capture_output=True, text=True,
                            timeout=TIMEOUT)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_sigkill_and_resume_end_with_the_same_weights(tmp_path):
    fit(*COMMON, f"run_dir={tmp_path / 'full'}")
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "colorlab.fit", *COMMON, f"run_dir={killed}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT
    while not (killed / "checkpoints" / "last.ckpt").is_file():  # epoch 0 is done
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.05)
    process.kill()  # SIGKILL, early in epoch 1: no handler, no cleanup
    process.wait()
    interrupted_at = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert interrupted_at < 192  # killed before the end (3 epochs x 64 steps)
    fit(*COMMON, f"run_dir={killed}", "ckpt_path=last")
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == full["global_step"] == 192
    for name, tensor in full["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


def test_bad_checkpoints_stop_with_a_clear_error(tmp_path, tiny_overrides):
    from colorlab.config import compose
    from colorlab.fit import train

    run = tmp_path / "run"
    train(compose("regression_l2", tiny_overrides + ["trainer.max_epochs=1"]))
    last = run / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    result = fit("experiment=regression_l2", *tiny_overrides, f"ckpt_path={truncated}", check=False)
    assert result.returncode == 2 and "cannot be read" in result.stderr and "truncated" in result.stderr
    result = fit("experiment=unet_bins", *tiny_overrides, f"ckpt_path={last}", check=False)
    assert result.returncode == 2 and "model.name=regression, this run has model.name=bins2d" in result.stderr
    result = fit("experiment=regression_l2", *tiny_overrides, f"run_dir={tmp_path / 'new'}", "ckpt_path=last",
                 check=False)
    assert result.returncode == 2 and "has no checkpoints/last.ckpt" in result.stderr
