"""What the benchmark scripts share: a run's model and optimiser outside a Trainer, and one training step as
Lightning takes it (Lab in fp32 outside autocast, training_step under bf16 autocast for bf16-mixed, backward,
AdamW), and what their command lines share. Imported by speed_keys.py, pipeline.py and throughput.py (run as
scripts, so from this folder).
"""

from __future__ import annotations

import contextlib

import torch

from colorlab.config import ConfigError, compose
from colorlab.data import add_lab
from colorlab.data.prior import load_or_compute_prior
from colorlab.models import build_model


def model_and_optimizer(cfg, device: str):
    """The model of ``cfg`` (prior from its cache) in train mode on ``device``, and its optimiser."""
    model = build_model(cfg, load_or_compute_prior(cfg)["counts"]).to(device).train()
    model.log = lambda *a, **k: None  # outside a Trainer
    opt = model.configure_optimizers()
    return model, opt["optimizer"] if isinstance(opt, dict) else opt


def training_step(model, opt, batch: dict, bf16: bool = False) -> None:
    """One optimiser step on ``batch`` (``rgb`` uint8 (B, 3, H, W) on the device, other keys as the DataModule
    gives them); fusion nets get a random embedding when the batch has none (cached inputs in training)."""
    batch = add_lab(dict(batch))  # fp32 Lab, outside autocast, as on_after_batch_transfer
    rgb = batch["rgb"]
    if getattr(model.net, "embed_dim", 0) and "embedding" not in batch:
        batch["embedding"] = torch.randn(rgb.shape[0], model.net.embed_dim, device=rgb.device)
    autocast = torch.autocast(rgb.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:  # Lightning's bf16-mixed wraps training_step alone
        loss = model.training_step(batch, 0)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def sync(device: str) -> None:
    """Wait for the device's queued work (a GPU's), so that a timer reads the work done."""
    if device == "cuda":
        torch.cuda.synchronize()


def check_overrides(parser, experiments: list[str], overrides: list[str]) -> None:
    """parser.error (before any work) for an override that the config of an experiment refuses."""
    try:
        for experiment in experiments:
            compose(experiment, overrides)
    except ConfigError as e:
        parser.error(f"--set: {e}")
