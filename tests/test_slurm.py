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


def test_sweep_agent_runs_each_trial_as_one_ddp_run_per_node(tmp_path):
    """experiments/slurm/sweep_agent.sbatch under a fake SLURM (one task per node): the agent (here the
    offline driver, the same command line per trial) runs a 2-process trainer=ddp_cpu trial that Lightning
    launches itself; SLURM's one-task layout would otherwise refuse two devices."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = slurm_env(tmp_path)
    srun = tmp_path / "bin" / "srun"  # stands in for SLURM's: drops its options, runs the command once
    srun.write_text('#!/bin/sh\nwhile [ "${1#--}" != "$1" ]; do shift; done\nexec "$@"\n')
    srun.chmod(0o755)
    sweep = tmp_path / "one.yaml"
    sweep.write_text("name: one\nprogram: colorlab/fit.py\nmethod: grid\nmetric: {name: val/ab_error}\n"
                     "parameters:\n  optim.lr: {values: [0.002]}\n  trainer: {value: ddp_cpu}\n"
                     "command: ['${env}', python, -m, colorlab.fit, experiment=regression_l2, '${args_no_hyphens}']\n")
    out = tmp_path / "sweep"
    tiny = ("logger=none data.num_workers=0 trainer.enable_progress_bar=false data.batch_size=4 data.train_size=16 "
            "data.val_size=8 trainer.max_steps=2")
    env.update(PYTHONPATH=str(repo), COLORLAB_SWEEP_AGENT=f"{sys.executable} -m colorlab.sweep {sweep} --count 1 "
                                                          f"--out {out} {tiny}")
    result = subprocess.run(["bash", str(repo / "experiments/slurm/sweep_agent.sbatch"), "entity/project/id"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = (out / "trial-000" / "trial.log").read_text()
    assert "finished" in (out / "summary.csv").read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log, log[-2000:]  # both ranks of the one trial
