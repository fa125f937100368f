"""Start a run from trained weights (``init=PATH``): a colorlab checkpoint or one of Zhang's released
state dicts (colorlab/models/released.py). Only the network's weights are taken; the formulation's
buffers (bins, prior, rebalancing weights) come from the new run's data, and the optimiser and schedule
start fresh: a new run, not a resume. ``finetune.freeze`` names network blocks that keep their weights
and BatchNorm statistics; ``finetune.lr_scale`` scales the learning rate of the loaded weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from colorlab.models.released import KINDS, MARKERS, WeightsError, import_released, read_state_dict


def network_state(path: Path) -> dict[str, Tensor]:
    """The network's tensors (names as in ``model.net``) of a colorlab checkpoint or a released state dict."""
    if not path.is_file():
        raise FileNotFoundError(f"init={path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # not a colorlab checkpoint: read_state_dict names what is wrong with the file
        checkpoint = None
    if isinstance(checkpoint, dict) and "colorlab_config" in checkpoint:
        return {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    released = read_state_dict(path)
    kind = next((k for k in KINDS if MARKERS[k] in released), None)
    if kind is None:
        raise WeightsError(f"init={path} is neither a colorlab checkpoint nor a released {' or '.join(KINDS)} state "
                           "dict")
    return import_released(kind, path).net.state_dict()


def load_init(model, path: Path | None, freeze: list[str], lr_scale: float) -> None:
    """Load the network weights of ``path`` into ``model.net`` (the same architecture, or one line naming the
    first tensor that differs), freeze the named blocks and set the loaded weights' learning-rate scale.
    ``path`` None (a resumed fine-tuning run: its checkpoint holds the weights): the last two alone."""
    if lr_scale < 0:
        raise ValueError(f"finetune.lr_scale must be >= 0. Got {lr_scale}")
    if path is not None:
        theirs, ours = network_state(path), model.net.state_dict()
        for name in sorted(set(theirs) | set(ours)):
            if name not in theirs or name not in ours or theirs[name].shape != ours[name].shape:
                shape = {k: tuple(d[name].shape) if name in d else "absent"
                         for k, d in (("it", theirs), ("here", ours))}
                raise ValueError(f"init={path} holds another network: tensor {name} is {shape['it']} there and "
                                 f"{shape['here']} here; give the net.* settings it was trained with (the released "
                                 "models: net.width=64)")
        model.net.load_state_dict(theirs)
    blocks = dict(model.net.named_children())
    unknown = [name for name in freeze if name not in blocks]
    if unknown:
        raise ValueError(f"finetune.freeze: {unknown} are not blocks of net={model.config['net']['name']}; valid: "
                         f"{', '.join(blocks)}")
    for name in freeze:
        blocks[name].requires_grad_(False)
    model.frozen_blocks, model.pretrained_lr_scale = list(freeze), lr_scale
    model.train()  # the frozen blocks in eval mode (Lightning keeps each module's mode across validation)
