"""Train one experiment: ``python -m colorlab.fit experiment=NAME [group=choice] [key=value] [+key=value]``.

Flags: ``--list`` lists the experiments, ``--cfg`` prints the composed config and exits.
Writes into ``run_dir``: config.yaml, checkpoints/ (last.ckpt, best-*.ckpt), samples/*.png,
metrics.json (final validation metrics) and the logger's files.
"""

from __future__ import annotations

import os
import signal
import time

# Under SLURM, --signal=SIGUSR1@90 warns of the time limit. Its timing is coarse (up to a minute early), so it can
# come seconds after the start, before Lightning would install a handler, and SIGUSR1's default action kills the
# process. It is recorded from process start instead; RequeueOnSignal saves and requeues after a training step.
requeue_signals: list[float] | None = None  # when the signal came (time.time()); None: not recorded here
if __name__ == "__main__" and "SLURM_JOB_ID" in os.environ:
    requeue_signals = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: requeue_signals.append(time.time()))

import contextlib
import json
import sys
import warnings
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from colorlab.cli import error
from colorlab.config import RUN_DIR_ENV, TRIAL_ENV, ConfigError, compose, experiment_listing, parse_cli

USAGE = __doc__.split("\n\n")[0]


def train(cfg: DictConfig, callbacks: list | None = None) -> dict[str, float]:
    """Fit the configured model; returns the final validation metrics (also in metrics.json).

    ``callbacks``: extra Lightning callbacks (benchmarks and tests use them to observe a run).
    Problems found before training starts (bad values, data, weights or checkpoints, a run_dir that
    holds another run) raise ConfigError.
    """
    run_dir = Path(cfg.run_dir)
    previous = os.environ.get(RUN_DIR_ENV)
    claimed = previous is None and claim_run_dir(cfg, run_dir)  # DDP children find it claimed
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP children re-run this command: same run_dir
    try:
        return _fit(cfg, run_dir, callbacks, config_written=claimed)
    except ConfigError:
        if claimed:  # nothing trained: leave the directory as it was found
            (run_dir / "config.yaml").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise
    finally:  # later runs in this process compose their own run_dir
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous


def claim_run_dir(cfg: DictConfig, run_dir: Path) -> bool:
    """Make ``run_dir`` this run's own, so a run never writes into another run's directory: it must be
    new or empty, and writing config.yaml exclusively claims it (two runs started together with one
    run_dir: the second is refused). Resuming (ckpt_path) and the ranks and requeues of one SLURM job
    share their directory. Returns whether config.yaml was written here."""
    slurm_dir = os.environ.get("SLURM_JOB_ID") and run_dir.name == f"slurm-{os.environ['SLURM_JOB_ID']}"
    if cfg.ckpt_path is not None or slurm_dir:
        return False
    refusal = (f"run_dir={run_dir} already holds files of another run; nothing was written. Give a new "
               f"run_dir (or none: a fresh runs/{cfg.experiment}/<timestamp>), or resume that run with "
               f"ckpt_path=last run_dir={run_dir}")
    if run_dir.is_file() or run_dir.is_dir() and any(run_dir.iterdir()):
        raise ConfigError(refusal)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with open(run_dir / "config.yaml", "x") as f:
            f.write(OmegaConf.to_yaml(cfg, resolve=True))
    except FileExistsError:
        raise ConfigError(refusal) from None
    return True


def _fit(cfg: DictConfig, run_dir: Path, callbacks: list | None, config_written: bool) -> dict[str, float]:
    from colorlab import checkpoints as ckpt

    datamodule, model, trainer, resume_from = prepare(cfg, run_dir, callbacks)
    if trainer.is_global_zero and not config_written:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        except ckpt.Requeued as e:
            if trainer.is_global_zero:
                print(f"colorlab.fit: {e}", flush=True)
            return {}
        if model.validated_step != trainer.global_step and trainer.num_val_batches and any(trainer.num_val_batches):
            trainer.validate(model, datamodule=datamodule, verbose=False)  # e.g. check_val_every_n_epoch > 1
    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")}
    if trainer.is_global_zero:
        write_summary(metrics, trainer, datamodule, run_dir)
    return metrics


def prepare(cfg: DictConfig, run_dir: Path, callbacks: list | None):
    """(datamodule, model, trainer, checkpoint to resume from or None): everything that can fail on a bad
    config fails here, before the first step, as one ConfigError."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    from colorlab import checkpoints as ckpt
    from colorlab.data import ColorDataModule
    from colorlab.data.prior import load_or_compute_prior
    from colorlab.embed import EmbedWeightsError, attach_embeddings
    from colorlab.loggers import ProgressBar, build_logger
    from colorlab.models import build_model

    if os.environ.get(TRIAL_ENV):  # a trial of an offline sweep: report the metric per epoch (pruning)
        from colorlab.sweep.pruning import callbacks_from_env

        callbacks = [*(callbacks or []), *callbacks_from_env()]
    if requeue_signals is not None:  # Lightning leaves a signal that has a handler alone
        callbacks = [*(callbacks or []), ckpt.RequeueOnSignal(requeue_signals)]
    try:
        resume_from = ckpt.resolve_resume(cfg, run_dir)
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule = ColorDataModule(seed=cfg.seed, **OmegaConf.to_container(cfg.data, resolve=True))
        datamodule.setup("fit")
        # data flows one way: files -> DataModule -> statistics (the ab prior, cached) -> model
        prior = load_or_compute_prior(cfg, datamodule)["counts"]
        attach_embeddings(datamodule, cfg)  # global features, computed once per image and cached
        model = build_model(cfg, prior)
        check_input_size(model, cfg.data.size)
        if resume_from:
            ckpt.check_architecture(resume_from, model)
        if cfg.get("init"):  # a new run from trained weights, fresh optimiser and schedule; a resume of it
            from colorlab.finetune import load_init  # keeps its frozen blocks and groups, with its own weights

            load_init(model, None if resume_from else Path(cfg.init), list(cfg.finetune.freeze),
                      cfg.finetune.lr_scale)
        trainer = pl.Trainer(default_root_dir=run_dir, logger=build_logger(cfg, run_dir),
                             callbacks=[*checkpoint_callbacks(cfg, run_dir), ckpt.RestoreLoaderState(),
                                        ValidateBeforeStopping(), *(callbacks or []),
                                        *([ProgressBar()] if cfg.trainer.enable_progress_bar else [])],
                             plugins=[ckpt.AtomicCheckpointIO()],
                             **OmegaConf.to_container(cfg.trainer, resolve=True))
        check_batches_per_epoch(datamodule, cfg, trainer.world_size)
    except MisconfigurationException as e:  # Lightning's own check of a trainer.* value
        raise ConfigError(f"trainer: {str(e).strip()}") from e
    except (ValueError, FileNotFoundError, TypeError, EmbedWeightsError) as e:
        raise ConfigError(str(e).strip().replace("\n", " ")) from e
    return datamodule, model, trainer, resume_from


def checkpoint_callbacks(cfg: DictConfig, run_dir: Path) -> list:
    """The best checkpoint by ``checkpoint.monitor`` first, then last.ckpt: Lightning's save_last only copies
    when a best checkpoint is written, so last.ckpt is kept apart, rewritten (atomically) after every epoch
    and every ``checkpoint.every_n_steps`` steps (one trigger per callback)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    every_n_steps = cfg.checkpoint.every_n_steps
    if not isinstance(every_n_steps, int) or every_n_steps < 0:
        raise ConfigError(f"checkpoint.every_n_steps={every_n_steps}: give a whole number of training steps, "
                          "or 0 to write last.ckpt after every epoch only")
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-{epoch:03d}",
                           monitor=cfg.checkpoint.monitor, mode=cfg.checkpoint.mode,
                           save_top_k=1, auto_insert_metric_name=False)
    last = [ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                            enable_version_counter=False, every_n_train_steps=n)
            for n in dict.fromkeys([None, every_n_steps or None])]
    return [best, *last]


def write_summary(metrics: dict[str, float], trainer: pl.Trainer, datamodule, run_dir: Path) -> None:
    """metrics.json (final validation metrics, epoch, step, skipped inputs, best checkpoint) and one line."""
    from colorlab.data.datamodule import skip_summary

    skipped = skip_summary(datamodule)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    summary = {**metrics, "epoch": trainer.current_epoch, "global_step": trainer.global_step,
               "data/skipped": skipped, "best_checkpoint": best or None}
    (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    if skipped:
        print(f"inputs left out: {sum(skipped.values())} (" + ", ".join(f"{n} {r}" for r, n in skipped.items())
              + ")")
    print(f"run written to {run_dir}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))


def check_input_size(model, size: int) -> None:
    multiple = getattr(model.net, "size_multiple", 1)
    if size % multiple:
        raise ConfigError(f"data.size={size}: net={model.config['net']['name']} needs a multiple of {multiple}, "
                          f"e.g. data.size={max(multiple, size // multiple * multiple)}")


def check_batches_per_epoch(datamodule, cfg: DictConfig, world_size: int) -> None:
    """An epoch that would hold no training batch is an error, not a run that trains nothing."""
    n_train = len(datamodule.train_set)
    if n_train // world_size >= cfg.data.batch_size:
        return
    found = f"{datamodule.train_set.n_items} usable training images" if hasattr(datamodule.train_set, "n_items") \
        else f"{n_train} training items"
    per_epoch = "data.train_size (random crops per epoch)" if "train_size" in cfg.data else "more training data"
    processes = f" x {world_size} processes" if world_size > 1 else ""
    raise ConfigError(f"data={cfg.data.name}: {found} give {n_train} crops per epoch, fewer than "
                      f"data.batch_size={cfg.data.batch_size}{processes}, so an epoch would hold no batch (incomplete "
                      f"batches are dropped). Raise {per_epoch}, "
                      f"e.g. data.train_size={cfg.data.batch_size * world_size * 2}, or lower data.batch_size")


class ValidateBeforeStopping(pl.Callback):
    """Every run ends by validating its final weights, so metrics.json, the sample grid, the loggers and
    the best checkpoint describe what was trained. Lightning validates when ``should_stop`` is raised
    during a batch (max_time, early stopping, a sweep's pruner) but not when ``max_steps`` ends the epoch
    loop mid-epoch: raise it on the last step too."""

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if 0 <= trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        experiment, overrides, flags = parse_cli(argv)
        if flags & {"--help", "-h"}:
            print(USAGE + "\n\nExperiments:\n" + experiment_listing())
            return 0
        if "--list" in flags:
            print(experiment_listing())
            return 0
        unknown = flags - {"--cfg", "--list", "--help", "-h"}
        if unknown:
            raise ConfigError(f"unknown flag {sorted(unknown)}; valid: --list, --cfg, --help")
        if experiment is None:
            raise ConfigError("missing experiment=NAME; available:\n" + experiment_listing())
        cfg = compose(experiment, overrides)
    except ConfigError as e:
        return error("fit", e)
    if "--cfg" in flags:
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        return 0
    try:
        train(cfg)
    except ConfigError as e:
        return error("fit", e)
    finally:  # nothing left to save: a late warning must not kill the process while it exits
        if requeue_signals is not None:
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
