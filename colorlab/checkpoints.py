"""Checkpoints that survive a kill, and resuming from them with clear errors."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.plugins.io import TorchCheckpointIO

from colorlab.io import atomic_save

# what must agree between a checkpoint and the run that resumes from it
RESUME_KEYS = ("model.name", "net.name", "model.bins", "model.n_bins", "embed.enabled", "embed.output")


class ResumeError(ValueError):
    """A checkpoint that cannot be resumed from; the message says why and what to do."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write through a temporary file and a rename: a run killed while saving leaves the previous
    checkpoint intact, never a truncated one."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        atomic_save(checkpoint, Path(path))


def read_checkpoint(path: Path) -> dict:
    """torch.load with weights_only=True; a truncated or foreign file is a ResumeError."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ResumeError(f"checkpoint {path} cannot be read ({type(e).__name__}: {str(e)[:200]}); it may be "
                          "truncated or not a torch checkpoint. Nothing was resumed: pass another ckpt_path, "
                          "or drop ckpt_path to start a fresh run") from e


def last_checkpoint(run_dir: Path) -> Path:
    """Where a run keeps its latest weights, rewritten after every epoch (fit.checkpoint_callbacks)."""
    return run_dir / "checkpoints" / "last.ckpt"


def resolve_resume(cfg: DictConfig, run_dir: Path) -> str | None:
    """The checkpoint to resume from (``ckpt_path``: null, 'last' or a path), checked against ``cfg``."""
    if cfg.ckpt_path is None:
        return None
    path = last_checkpoint(run_dir) if cfg.ckpt_path == "last" else Path(cfg.ckpt_path)
    if not path.is_file():
        hint = (f"run_dir={run_dir} has no checkpoints/last.ckpt; give the run to resume, "
                f"e.g. run_dir=runs/{cfg.experiment}/<timestamp>") if cfg.ckpt_path == "last" else "no such file"
        raise ResumeError(f"ckpt_path={cfg.ckpt_path}: {hint}")
    stored = read_checkpoint(path).get("colorlab_config")
    if stored is None:
        raise ResumeError(f"{path} is not a colorlab checkpoint (no 'colorlab_config' entry)")
    stored = OmegaConf.create(stored)
    for key in RESUME_KEYS:
        theirs, ours = OmegaConf.select(stored, key), OmegaConf.select(cfg, key)
        if theirs != ours:
            raise ResumeError(f"{path} was trained with {key}={theirs}, this run has {key}={ours}: a checkpoint "
                              f"resumes only the same formulation (experiment {stored.get('experiment')})")
    return str(path)


def latest_run_with_checkpoint(experiment: str, root: Path = Path("runs")) -> Path | None:
    """The most recent run directory of an experiment that holds checkpoints/last.ckpt."""
    candidates = list((root / experiment).glob("*/checkpoints/last.ckpt"))
    return max(candidates, key=lambda p: p.stat().st_mtime).parent.parent if candidates else None


class RestoreLoaderState(pl.Callback):
    """Give a resumed run's training loader the state saved in its checkpoint (colorlab's ResumableLoader:
    the epoch and the batches drawn; litdata's StreamingDataLoader: where each worker was in its shards),
    so a mid-epoch resume continues the epoch instead of restarting it.

    Lightning 2.6 applies saved loader states when it first builds the training loader; a
    one-cycle schedule asks for trainer.estimated_stepping_batches in configure_optimizers,
    which builds the loader (and its iterator) before the checkpoint is read, so the state would never be
    applied. on_train_start runs after the restore and before the first batch is drawn: the states are
    loaded here and the iterator made again, from the restored position.
    """

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fit_loop = trainer.fit_loop
        if getattr(fit_loop, "_combined_loader_states_to_load", None):
            fit_loop._load_combined_loader_states()  # a no-op unless restarting with states and a loader
        loaders = fit_loop._combined_loader.flattened if fit_loop._combined_loader is not None else []
        if any(getattr(loader, "resume_pending", False) for loader in loaders):
            iter(fit_loop._data_fetcher)


class Requeued(Exception):
    """The job was requeued after saving: this attempt ends here, the next one resumes."""


REQUEUE_CHECK_EVERY = 10  # DDP: training steps between the ranks' agreement on a signal


class RequeueOnSignal(pl.Callback):
    """SLURM's time-limit warning (``--signal=SIGUSR1@90``), recorded in ``received`` from process start, acted
    on after a training step, where weights, optimiser and data position agree (Lightning's own handler saves
    from inside the signal handler, possibly mid-step): saves ``hpc_ckpt_N.ckpt`` in the run directory, which
    the requeued job resumes from, requeues the job and raises Requeued. Under DDP the ranks agree on the step,
    every ``REQUEUE_CHECK_EVERY`` steps: agreeing is an all-reduce read back on the host, which on a GPU waits for
    the queued step (SLURM warns 90 s ahead; ten steps take seconds). A signal that came before training
    started is acted on after the first step (alone) or the tenth (DDP), so every attempt advances.
    """

    def __init__(self, received: list[float]):
        self.received = received  # time.time() of each signal

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        signalled = bool(self.received)
        if trainer.world_size > 1:
            if trainer.global_step % REQUEUE_CHECK_EVERY:  # the same step on every rank
                return
            signalled = trainer.strategy.reduce_boolean_decision(signalled, all=False)
        if not signalled:
            return
        path = trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir)
        trainer.save_checkpoint(path)
        when = time.strftime("%H:%M:%S", time.gmtime(self.received[0])) if self.received else "?"
        job = requeue_job_id()
        if trainer.is_global_zero:
            print(f"colorlab: SIGUSR1 (SLURM's time-limit warning) at {when} UTC; saved {path} at step "
                  f"{trainer.global_step}; requeueing job {job}", flush=True)
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            if done.returncode != 0:
                print(f"colorlab: scontrol requeue {job} failed ({(done.stdout + done.stderr).strip()}); training "
                      f"goes on until the time limit, resume later with ckpt_path={path}", flush=True)
        requeued = done.returncode == 0 if trainer.is_global_zero else False
        if trainer.world_size > 1:
            requeued = trainer.strategy.broadcast(requeued, src=0)
        self.received.clear()
        if requeued:
            raise Requeued(f"job {job} requeued at step {trainer.global_step}; the next attempt resumes from {path}")


def requeue_job_id() -> str:
    """The id scontrol requeue takes: ARRAYJOB_TASK for an array task, else the job id."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID", "")


def check_architecture(path: str | Path, model: pl.LightningModule) -> None:
    """A checkpoint whose tensors do not fit ``model`` (another net.width, depth, bins...) is a ResumeError
    naming the first tensor that differs, instead of a size-mismatch traceback from load_state_dict."""
    checkpoint = read_checkpoint(Path(path))
    theirs, ours = checkpoint.get("state_dict", {}), model.state_dict()
    for name in sorted(set(theirs) | set(ours)):
        if name not in theirs or name not in ours or theirs[name].shape != ours[name].shape:
            shape = {k: tuple(d[name].shape) if name in d else "absent" for k, d in (("it", theirs), ("here", ours))}
            stored = (checkpoint.get("colorlab_config") or {}).get("net")
            raise ResumeError(f"{path} holds another architecture: tensor {name} is {shape['it']} there and "
                              f"{shape['here']} here. Resume with the net.* settings it was trained with "
                              f"({stored}), or drop ckpt_path to start a fresh run")
