"""The sbatch templates on SLURM. The first test simulates SLURM's environment (a stand-in scontrol records the
requeue); the others submit the real templates, with command-line overrides only, to a local single-node
SLURM that tests/slurm.py starts (marked ``slurm``, skipped where it cannot start)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.slurm import _logs, job_states, slurm_cluster, submit, wait_for_job

TIMEOUT = 300
REPO = Path(__file__).resolve().parents[1]
DDP = REPO / "experiments" / "slurm" / "ddp.sbatch"
# a 2-core node: the template's GPU and CPU requests replaced on the command line
CPU_JOB = ["--nodes=1", "--gres=none", "--cpus-per-task=1"]
# regression_l2 at 32 px, width 8; 2 ranks x 4 images per step: 31 steps per epoch, 3 epochs
TINY = ["experiment=regression_l2", "trainer.accelerator=cpu", "trainer.precision=32-true", "logger=none",
        "data.num_workers=0", "data.size=32", "net.width=8", "data.batch_size=4", "data.train_size=248",
        "data.val_size=16", "trainer.max_epochs=3", "trainer.deterministic=true", "trainer.enable_progress_bar=false",
        "checkpoint.every_n_steps=3"]


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
    assert first.wait(timeout=TIMEOUT) == 0  # saved, requeued, and this attempt ended
    assert (run_dir / "hpc_ckpt_1.ckpt").is_file()
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
    env.update(PYTHONPATH=str(REPO), COLORLAB_SWEEP_AGENT=f"{sys.executable} -m colorlab.sweep {sweep} --count 1 "
                                                          f"--out {out} {tiny}")
    result = subprocess.run(["bash", str(REPO / "experiments/slurm/sweep_agent.sbatch"), "entity/project/id"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = (out / "trial-000" / "trial.log").read_text()
    assert "finished" in (out / "summary.csv").read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log, log[-2000:]  # both ranks of the one trial


@pytest.fixture(scope="module")
def slurm_module():
    with slurm_cluster() as env:
        env.update(PYTHONPATH=str(REPO), WANDB_MODE="disabled", PYTHONUNBUFFERED="1",
                   PATH=f"{Path(sys.executable).parent}:{env['PATH']}")  # jobs run this interpreter's python
        yield env


@pytest.fixture
def cluster(slurm_module):
    """The module's cluster; a test's jobs that are still there after it (it failed) are cancelled, so they do
    not hold the node's two CPUs from the next test."""
    yield slurm_module
    subprocess.run(["scancel", "--user=root"], env=slurm_module, capture_output=True, timeout=30)


def job_dir(tmp_path, name):
    """A submission folder with runs/ in it: SLURM opens runs/slurm-%j.out before the script starts."""
    (tmp_path / name / "runs").mkdir(parents=True)
    return tmp_path / name


def wait_until(condition, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def hurry_requeued(env, job):
    """A requeued job waits about two minutes (Reason=BeginTime) before it is eligible again; let it start now
    (SLURM takes the new start time only once the job is pending again), but only once the first attempt's
    step daemons have exited: on a loaded machine they outlive the requeue by seconds, and an attempt launched
    beside them failed (FAILED restarts=1, no output)."""
    def first_attempt_gone() -> bool:
        leftover = subprocess.run(["pgrep", "-f", rf"slurmstepd: \[{job}\."], capture_output=True)
        return job_states(env, job)[job].startswith("PENDING") and leftover.returncode == 1

    wait_until(first_attempt_gone, "the requeued job to be pending, its first attempt gone")
    # slurmd revokes the job's credential at the requeue and refuses one created in the same second ("Killing
    # non-startable batch job: Job credential revoked", FAILED restarts=1): start the next attempt after it
    time.sleep(2)
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=env, check=True, timeout=30)


def last_step(run_dir: Path) -> int:
    last = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(last, weights_only=True)["global_step"] if last.is_file() else -1


@pytest.mark.slow
@pytest.mark.slurm
def test_ddp_job_requeued_mid_epoch_ends_as_uninterrupted_and_matches_one_process(cluster, tmp_path):
    """Two 2-task DDP jobs of the template (gloo): one runs through; the other gets SIGUSR1, as SLURM sends it
    before the time limit, in the middle of an epoch, saves, requeues itself and resumes. Both end with the same
    weights; the log holds both attempts; validation equals a 1-process run's."""
    whole, requeued = job_dir(tmp_path, "whole"), job_dir(tmp_path, "requeued")
    ddp = [*CPU_JOB, "--ntasks-per-node=2", "--time=10", DDP, *TINY]
    whole_job = submit(cluster, ddp, whole)
    job = submit(cluster, ddp, requeued)
    # the reference, meanwhile: one process, 8 images per step (the same effective batch), no SLURM
    one = subprocess.Popen([sys.executable, "-m", "colorlab.fit", *TINY, "data.batch_size=8",
                            f"run_dir={tmp_path / 'one'}"], env={**cluster, "SLURM_CONF": ""},
                           stdout=subprocess.DEVNULL, stderr=open(tmp_path / "one.log", "w"))
    run_dir = requeued / "runs" / "regression_l2" / f"slurm-{job}"  # keyed on the job id
    wait_until(lambda: last_step(run_dir) > 31 and last_step(run_dir) % 31, "a mid-epoch last.ckpt in epoch 2",
               TIMEOUT * 2)
    subprocess.run(["scancel", "--signal=USR1", job], env=cluster, check=True, timeout=30)
    wait_until(lambda: "restarts=1" in job_states(cluster, job)[job], "the requeue")
    hurry_requeued(cluster, job)
    states = wait_for_job(cluster, job, TIMEOUT * 2)
    assert wait_for_job(cluster, whole_job, TIMEOUT)[whole_job] == "COMPLETED restarts=0"
    assert states[job] == "COMPLETED restarts=1"

    log = (requeued / "runs" / f"slurm-{job}.out").read_text()
    headers = [line for line in log.splitlines() if line.startswith("== colorlab job")]
    assert [h.split(", ")[:2] for h in headers] == [[f"== colorlab job {job}", "restart 0"],
                                                    [f"== colorlab job {job}", "restart 1"]], headers
    assert "requeueing job" in log and "Restored all states" in log and "not resumable" not in log, log[-3000:]
    interrupted = torch.load(run_dir / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"]
    assert 31 < interrupted < 93 and interrupted % 31, interrupted  # mid-epoch
    reference = torch.load(whole / "runs" / "regression_l2" / f"slurm-{whole_job}" / "checkpoints" / "last.ckpt",
                           weights_only=True)
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == reference["global_step"] == 93
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name

    assert one.wait(timeout=TIMEOUT) == 0, (tmp_path / "one.log").read_text()[-3000:]
    two = json.loads((run_dir / "metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    assert one["global_step"] == two["global_step"] == 93
    # a function of the validation data alone: equal only if the ranks cover the validation split exactly once
    assert two["val/ab_error_gray"] == pytest.approx(one["val/ab_error_gray"], rel=1e-5)
    for key in ("val/ab_error", "val/chroma"):  # training differs in order and per-rank batch norm: 15%
        assert two[key] == pytest.approx(one[key], rel=0.15), key


def catches_sigusr1(job: str) -> bool:
    """Whether the job's ``python -m colorlab.fit`` task has its SIGUSR1 handler (SigCgt bit 10 in
    /proc/PID/status); srun, whose command line also names colorlab.fit, is not the task."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if not (Path(argv[0].decode()).name.startswith("python") and b"colorlab.fit" in argv
                    and f"SLURM_JOB_ID={job}".encode() in (proc / "environ").read_bytes().split(b"\0")):
                continue
            caught = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("SigCgt"))
            if int(caught.split()[1], 16) & 1 << (signal.SIGUSR1 - 1):
                return True
        except (OSError, StopIteration):  # not a process, or one that just ended
            continue
    return False


@pytest.mark.slow
@pytest.mark.slurm
def test_a_signal_in_the_first_seconds_requeues_instead_of_killing(cluster, tmp_path):
    """A 2-minute limit: SLURM's warning (SIGUSR1 90 s before the limit, up to a minute early) comes while the
    process is still starting. Sent here as soon as the task's Python records it (its first line), before it has
    imported torch: the job saves after its first step and requeues, and the log says so; it is never killed by
    the signal."""
    folder = job_dir(tmp_path, "early")
    job = submit(cluster, [*CPU_JOB, "--ntasks-per-node=1", "--time=2", DDP, *TINY], folder)
    out = folder / "runs" / f"slurm-{job}.out"
    wait_until(lambda: catches_sigusr1(job), "the task's Python to record SIGUSR1", timeout=60)
    subprocess.run(["scancel", "--signal=USR1", job], env=cluster, check=True, timeout=30)
    wait_until(lambda: job_states(cluster, job).get(job, "").split()[0] != "RUNNING", "the end of the attempt")
    state = job_states(cluster, job)[job]
    subprocess.run(["scancel", job], env=cluster, timeout=30)  # one requeue shows it: no need to finish
    log = out.read_text()
    assert "restarts=1" in state, state + "\n" + log[-3000:]
    assert "SIGUSR1 (SLURM's time-limit warning) at" in log and f"requeueing job {job}" in log, log[-3000:]
    assert "User defined signal 1" not in log, log[-3000:]
    assert (folder / "runs" / "regression_l2" / f"slurm-{job}" / "hpc_ckpt_1.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.slurm
def test_a_signal_before_python_starts_requeues_from_the_batch_script(cluster, tmp_path):
    """The milliseconds between the task's start and colorlab.fit's first line: a stand-in python that dies of
    SIGUSR1 on the first attempt. ddp.sbatch sees srun's 138 (128 + SIGUSR1) and requeues; the second attempt
    runs."""
    folder = job_dir(tmp_path, "before")
    stand_in = tmp_path / "bin" / "python"
    stand_in.parent.mkdir()
    stand_in.write_text('#!/bin/sh\n[ "${SLURM_RESTART_COUNT:-0}" = 0 ] && kill -USR1 $$\n'
                        'echo "attempt $SLURM_RESTART_COUNT ran"\n')
    stand_in.chmod(0o755)
    env = {**cluster, "PATH": f"{stand_in.parent}:{cluster['PATH']}"}
    job = submit(env, [*CPU_JOB, "--ntasks-per-node=1", DDP, "experiment=regression_l2"], folder)
    def first_attempt_over() -> bool:
        state = job_states(cluster, job)[job]
        return "restarts=1" in state or state.split()[0] in ("COMPLETED", "FAILED", "CANCELLED")

    wait_until(first_attempt_over, "the first attempt to end")
    log = (folder / "runs" / f"slurm-{job}.out").read_text()
    assert "restarts=1" in job_states(cluster, job)[job], log
    hurry_requeued(cluster, job)
    state = wait_for_job(cluster, job, TIMEOUT)[job]
    log = (folder / "runs" / f"slurm-{job}.out").read_text()
    assert state == "COMPLETED restarts=1", state + "\n" + log + _logs(Path(cluster["SLURM_CONF"]).parent)
    assert f"came before Python started; requeueing job {job}" in log and "attempt 1 ran" in log, log


@pytest.mark.slow
@pytest.mark.slurm
def test_sweep_array_runs_each_grid_point_once(cluster, tmp_path):
    """sbatch --array=0-1 sweep.sbatch sweeps/lambda.yaml --count 5: two drivers on one journal share the five
    grid points of lambda.yaml, each run exactly once."""
    folder = job_dir(tmp_path, "sweep")
    tiny = ["trainer.max_steps=3", "logger=none", "data.num_workers=0", "data.size=32", "net.width=8",
            "data.batch_size=4", "data.train_size=16", "data.val_size=8", "trainer.enable_progress_bar=false",
            "prior.max_images=16", f"prior.cache_dir={tmp_path / 'priors'}"]
    job = submit(cluster, ["--array=0-1", "--ntasks=1", "--gres=none", "--cpus-per-task=1", "--time=10",
                           REPO / "experiments/slurm/sweep.sbatch", REPO / "sweeps/lambda.yaml", "--count", "5",
                           *tiny], folder)
    states = wait_for_job(cluster, job, TIMEOUT * 2)
    assert sorted(states.values()) == ["COMPLETED restarts=0"] * 2, states
    out = folder / "runs" / "sweeps" / f"lambda-{job}"
    trials = sorted(out.glob("trial-*"))
    lams = [float(line.split(":", 1)[1]) for trial in trials
            for line in (trial / "config.yaml").read_text().splitlines() if line.strip().startswith("lam:")]
    assert sorted(lams) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all((trial / "metrics.json").is_file() for trial in trials)
    logs = [(folder / "runs" / f"slurm-sweep-{job}_{task}.out").read_text() for task in (0, 1)]
    assert all(f"== colorlab sweep task {job}_{task}" in log for task, log in enumerate(logs))


def test_run_dir_and_wandb_id_are_keyed_on_the_job_id(monkeypatch, tmp_path):
    """A requeued job keeps its SLURM_JOB_ID: the same run directory and the same W&B run, resumed."""
    from colorlab.config import compose
    from colorlab.loggers import build_logger

    monkeypatch.setenv("SLURM_JOB_ID", "77")
    cfg = compose("regression_l2", ["logger=wandb"])
    assert cfg.run_dir == "runs/regression_l2/slurm-77"
    logger = build_logger(cfg, tmp_path)
    assert (logger._wandb_init["id"], logger._wandb_init["resume"]) == ("regression_l2-slurm-77", "allow")
