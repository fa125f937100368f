"""SLURM pre-emption: SIGUSR1 makes Lightning save an hpc checkpoint and requeue; the requeued job
(same SLURM_JOB_ID, so the same run_dir) resumes from it."""

import os
import signal
import subprocess
import sys
import time

import pytest

TIMEOUT = 300


def slurm_env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"  # stands in for SLURM's: records the requeue request
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'requeued.txt'}\n")
    scontrol.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NAME": "colorlab", "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1",
            "SLURM_NODELIST": "localhost", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0",
            "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


@pytest.mark.slow
def test_sigusr1_saves_requeues_and_the_next_start_resumes(tmp_path):
    args = [sys.executable, "-m", "colorlab.fit", "experiment=regression_l2", "logger=none", "data.num_workers=0",
            "data.train_size=1024", "data.val_size=16", "data.batch_size=16", "trainer.max_epochs=3",
            "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"]
    env = slurm_env(tmp_path)
    run_dir = tmp_path / "runs" / "regression_l2" / "slurm-4242"  # keyed on SLURM_JOB_ID, not a timestamp
    first = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + TIMEOUT
    while not (run_dir / "checkpoints" / "last.ckpt").is_file():
        assert first.poll() is None and time.monotonic() < deadline, "the run ended before the signal"
        time.sleep(0.05)
    first.send_signal(signal.SIGUSR1)  # what SLURM sends 90 s before the time limit
    while not (run_dir / "hpc_ckpt_1.ckpt").is_file():
        assert time.monotonic() < deadline, "no hpc checkpoint after SIGUSR1"
        time.sleep(0.05)
    time.sleep(0.5)
    first.kill()  # the time limit
    first.wait()
    assert (tmp_path / "requeued.txt").read_text().split() == ["requeue", "4242"]

    second = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert second.returncode == 0, second.stderr[-3000:]
    log = second.stdout + second.stderr
    assert "hpc_ckpt_1.ckpt" in log and "Restored all states" in log, log[-3000:]
    assert (run_dir / "metrics.json").is_file()
