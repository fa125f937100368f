"""Experiment loggers from the ``logger`` config group: wandb (offline by default), csv or none; and the
progress bar."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import RichProgressBar
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

LOGGERS = ("wandb", "csv", "none")


def build_logger(cfg: DictConfig, run_dir: Path) -> Logger | bool:
    name = cfg.logger.name
    if name == "none":
        return False
    if name == "csv":
        return CSVLogger(save_dir=run_dir, name="", version="csv")
    if name == "wandb":
        mode = cfg.logger.mode
        if os.environ.get("WANDB_SWEEP_ID") and "WANDB_MODE" not in os.environ:
            mode = "online"  # started by `wandb agent`: the sweep server needs the run's metrics
        # a requeued SLURM job continues the same W&B run
        job = os.environ.get("SLURM_JOB_ID")
        run_id = {"id": f"{cfg.experiment}-slurm-{job}", "resume": "allow"} if job else {}
        return WandbLogger(**run_id, project=cfg.logger.project, entity=cfg.logger.entity, group=cfg.logger.group,
                           tags=list(cfg.logger.tags), name=f"{cfg.experiment}/{run_dir.name}",
                           save_dir=str(run_dir), mode=mode,
                           config=OmegaConf.to_container(cfg, resolve=True))
    raise ValueError(f"logger.name={name!r} is not a logger; valid: {LOGGERS}")


class ProgressBar(RichProgressBar):
    """Lightning's rich bar (its default where rich is installed) with the training loss beside it, read on
    the host at the first step and then once every ``log_every_n_steps`` optimizer steps (every 50 when
    that is 0, which turns logging off).

    Lightning turns a value logged with ``prog_bar=True`` into a Python number after every training step;
    on a GPU that makes the host wait for the step to finish before it can queue the next one, and the
    device idles while the host prepares each step."""

    def __init__(self) -> None:
        super().__init__()
        self._loss: float | None = None
        self._read_at: int | None = None  # the optimizer step the loss shown was read at

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss") if trainer.training else None
        step, every = trainer.global_step, trainer.log_every_n_steps or 50
        if loss is not None and self._read_at != step and (self._loss is None or step % every == 0):
            self._loss, self._read_at = float(loss), step  # once per step, also with gradient accumulation
        if self._loss is not None:
            metrics["train/loss"] = self._loss
        return metrics
