"""A throwaway single-node SLURM for tests: Debian's slurm-wlm and munge, one munged, one slurmctld and one
slurmd on localhost (2 CPUs) in a temporary directory, on free ports, run as root in the foreground; stopped and
removed afterwards. Clients (sbatch, squeue, scontrol, also inside jobs) find it through SLURM_CONF.

Missing binaries, not being root, or a cluster that does not come up skip the test, or fail it when
COLORLAB_REQUIRE_SLURM=1 (set by .ci/run, which installs the packages).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo", "sacct")
START_TIMEOUT = 60  # seconds for the node to report idle


def _missing(message: str):
    required = os.environ.get("COLORLAB_REQUIRE_SLURM") == "1"
    (pytest.fail if required else pytest.skip)(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def slurm_conf(base: Path, ctld_port: int, node_port: int) -> str:
    """The cluster of these tests: one node, 2 CPUs, no cgroups (linuxproc), requeue allowed, short kill waits."""
    return f"""ClusterName=colorlab-test
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={base}/munge.socket
CredType=cred/munge
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/slurmctld.log
SlurmdLogFile={base}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
SwitchType=switch/none
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
JobRequeue=1
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _start(command: list, base: Path, name: str, env: dict) -> subprocess.Popen:
    log = open(base / f"{name}.out", "w")
    return subprocess.Popen([str(c) for c in command], cwd=base, env=env, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the daemon's own process group (slurmd's job steps live in their own)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def _logs(base: Path) -> str:
    parts = [f"-- {p.name}:\n" + p.read_text(errors="replace")[-1500:] for p in sorted(base.glob("*.log"))
             + sorted(base.glob("*.out")) if p.is_file()]
    return "\n".join(parts)


@contextlib.contextmanager
def slurm_cluster() -> Iterator[dict]:
    """Yields the environment that submits to a fresh cluster (SLURM_CONF set, PATH with SLURM's clients);
    skips (or fails, see the module docstring) when SLURM cannot start."""
    missing = [name for name in DAEMONS + CLIENTS if _which(name) is None]
    if missing:
        _missing(f"needs SLURM ({', '.join(missing)} not found): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        _missing("the test cluster runs slurmd as root (it starts jobs as their user); run the SLURM tests as root")
    base = Path(tempfile.mkdtemp(prefix="colorlab-slurm-"))
    base.chmod(0o700)  # munged refuses a key or socket in a directory others may write to
    for folder in ("state", "spool"):
        (base / folder).mkdir()
    (base / "munge.key").write_bytes(os.urandom(1024))
    (base / "munge.key").chmod(0o600)
    conf = base / "slurm.conf"
    conf.write_text(slurm_conf(base, _free_port(), _free_port()))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    for key in [k for k in env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF"]:
        del env[key]  # a test run inside a SLURM job must not hand that job's settings to its own
    processes = []
    try:
        processes.append(_start([_which("munged"), "--foreground", "--force", f"--socket={base}/munge.socket",
                                 f"--key-file={base}/munge.key", f"--pid-file={base}/munged.pid",
                                 f"--log-file={base}/munged.log", f"--seed-file={base}/munged.seed"],
                                base, "munged", env))
        deadline = time.monotonic() + START_TIMEOUT
        while not (base / "munge.socket").exists():
            if processes[0].poll() is not None or time.monotonic() > deadline:
                _missing("munged did not start:\n" + _logs(base))
            time.sleep(0.1)
        processes.append(_start([_which("slurmctld"), "-D", "-i", "-f", conf], base, "slurmctld", env))
        processes.append(_start([_which("slurmd"), "-D", "-N", "localhost", "-f", conf], base, "slurmd", env))
        while True:
            state = subprocess.run(["sinfo", "-h", "-n", "localhost", "-o", "%T"], env=env, capture_output=True,
                                   text=True, timeout=30).stdout.strip()
            if state == "idle":
                break
            if any(p.poll() is not None for p in processes) or time.monotonic() > deadline:
                _missing(f"the test cluster did not come up (node state {state!r}):\n" + _logs(base))
            time.sleep(0.5)
        yield env
    finally:
        with contextlib.suppress(Exception):
            subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True, timeout=30)
        for process in reversed(processes):
            _stop(process)
        shutil.rmtree(base, ignore_errors=True)


def submit(env: dict, args: list, cwd: Path) -> str:
    """sbatch ARGS in ``cwd``; returns the job id."""
    done = subprocess.run(["sbatch", "--parsable", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def job_states(env: dict, job: str) -> dict[str, str]:
    """{job or array task id: state} from scontrol (finished jobs stay listed for MinJobAge)."""
    done = subprocess.run(["scontrol", "-o", "show", "job", job], env=env, capture_output=True, text=True,
                          timeout=30)
    states = {}
    for line in done.stdout.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        task = fields.get("ArrayTaskId")
        key = f"{fields.get('ArrayJobId')}_{task}" if task and task != "N/A" else fields.get("JobId", "")
        states[key] = fields.get("JobState", "?") + (f" restarts={fields['Restarts']}" if "Restarts" in fields else "")
    return states


def wait_for_job(env: dict, job: str, timeout: float) -> dict[str, str]:
    """Waits until no task of ``job`` is pending, running, requeued or completing; returns their final states."""
    deadline = time.monotonic() + timeout
    while True:
        states = job_states(env, job)
        active = [s for s in states.values() if s.split()[0] in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING",
                                                                 "CONFIGURING", "REQUEUE_HOLD", "REQUEUE_FED")]
        if states and not active:
            return states
        assert time.monotonic() < deadline, f"job {job} still {states} after {timeout} s"
        time.sleep(1)
