"""Train one experiment: ``python -m colorlab.fit experiment=NAME [group=choice] [key=value] [+key=value]``.

Flags: ``--list`` lists the experiments, ``--cfg`` prints the composed config and exits.
Writes into ``run_dir``: config.yaml, checkpoints/ (last.ckpt, best-*.ckpt), samples/*.png,
metrics.json (final validation metrics) and the logger's files.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from colorlab.config import RUN_DIR_ENV, ConfigError, compose, experiment_listing, parse_cli

USAGE = __doc__.split("\n\n")[0]


def train(cfg: DictConfig, callbacks: list | None = None) -> dict[str, float]:
    """Fit the configured model; returns the final validation metrics (also in metrics.json).

    ``callbacks``: extra Lightning callbacks (benchmarks and tests use them to observe a run).
    """
    run_dir = Path(cfg.run_dir)
    previous = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(run_dir)  # DDP children re-run this command: same run_dir
    try:
        return _fit(cfg, run_dir, callbacks)
    finally:  # later runs in this process compose their own run_dir
        if previous is None:
            os.environ.pop(RUN_DIR_ENV, None)
        else:
            os.environ[RUN_DIR_ENV] = previous


def _fit(cfg: DictConfig, run_dir: Path, callbacks: list | None) -> dict[str, float]:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from colorlab.checkpoints import AtomicCheckpointIO, RestoreLoaderState, resolve_resume
    from colorlab.data import ColorDataModule
    from colorlab.data.datamodule import skip_summary
    from colorlab.embed import attach_embeddings
    from colorlab.loggers import build_logger
    from colorlab.models import build_model

    resume_from = resolve_resume(cfg, run_dir)  # before any work: a bad checkpoint stops the run here
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = ColorDataModule(seed=cfg.seed, **OmegaConf.to_container(cfg.data, resolve=True))
    attach_embeddings(datamodule, cfg)  # global features, computed once per image and cached
    model = build_model(cfg)
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-{epoch:03d}",
                                 monitor=cfg.checkpoint.monitor, mode=cfg.checkpoint.mode,
                                 save_top_k=1, auto_insert_metric_name=False)
    # Lightning's save_last only copies when a best checkpoint is written: keep last.ckpt apart,
    # rewritten (atomically) after every epoch
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                           enable_version_counter=False)
    trainer = pl.Trainer(default_root_dir=run_dir, logger=build_logger(cfg, run_dir),
                         callbacks=[checkpoint, last, RestoreLoaderState(), *(callbacks or [])],
                         plugins=[AtomicCheckpointIO()],
                         **OmegaConf.to_container(cfg.trainer, resolve=True))
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)

    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("val/")}
    if trainer.is_global_zero:
        skipped = skip_summary(datamodule)
        summary = {**metrics, "epoch": trainer.current_epoch, "global_step": trainer.global_step,
                   "data/skipped": skipped, "best_checkpoint": checkpoint.best_model_path or None}
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        if skipped:
            print(f"inputs left out: {sum(skipped.values())} (" + ", ".join(f"{n} {r}" for r, n in skipped.items())
                  + ")")
        print(f"run written to {run_dir}: " + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return metrics


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
        print(f"colorlab.fit: error: {e}", file=sys.stderr)
        return 2
    if "--cfg" in flags:
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
        return 0
    from colorlab.checkpoints import ResumeError

    try:
        train(cfg)
    except ResumeError as e:
        print(f"colorlab.fit: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
