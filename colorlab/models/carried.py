"""What video training adds to a formulation's step: frame t-1's colours carried along the flow as hints
(degraded truth, or the network's own prediction) and Lai et al. 2018's short-term temporal loss. Plain
functions of the model and the batch, so that ``Colorizer.training_step`` reads as the formulation contract.
Batch keys (see ``colorlab.data.datamodule.add_lab``): ``previous_ab``/``previous_valid`` (frame t-1's ab
carried onto frame t, and where it is visible), ``l_previous``/``ab_previous``/``l_stack_previous`` (frame
t-1 itself) and ``previous_flow`` (from frame t to t-1, pixels).
"""

from __future__ import annotations

import torch
from torch import Tensor

from colorlab.flow import warp
from colorlab.hints import degrade_carried, sample_hints


def training_hints(model, batch: dict) -> tuple[Tensor, Tensor]:
    """(hint_ab (B, 2, H, W), hint_mask (B, 1, H, W)) for a training batch: synthetic user hints; frames
    that carry frame t-1 get its colours instead (degraded, or with probability ``hints.carry_self`` the
    network's own); with probability ``hints.drop`` an image gets none."""
    sampling = model.hint_sampling
    hint_ab, hint_mask = sample_hints(batch["ab"], sampling)
    if sampling.carry_self > 0 and "previous_ab" not in batch:
        raise ValueError("hints.carry_self > 0 needs frames that carry frame t-1: data.previous=true "
                         "(data=synthetic_video or video_folder)")
    if "previous_ab" in batch:  # video_propagate: frames with a previous one get its colours as hints
        carried = batch["previous_valid"].flatten(1).any(1)[:, None, None, None]
        previous = degrade_carried(batch["previous_ab"], batch["previous_valid"], sampling)
        if sampling.carry_self > 0:
            own = torch.rand(previous.shape[0], 1, 1, 1, device=previous.device) < sampling.carry_self
            previous = torch.where(own, own_carried(model, batch), previous)
        hint_ab = torch.where(carried, previous, hint_ab)
        hint_mask = torch.where(carried, batch["previous_valid"].float(), hint_mask)
    if sampling.drop > 0:  # images with no hints keep the network a colorizer on its own
        kept = torch.rand(batch["l"].shape[0], 1, 1, 1, device=batch["l"].device) >= sampling.drop
        hint_ab, hint_mask = hint_ab * kept, hint_mask * kept
    return hint_ab, hint_mask


@torch.no_grad()
def own_carried(model, batch: dict) -> Tensor:
    """The network's own colours for frame t-1, hinted with frame t-1's degraded truth on every pixel
    (a stand-in for colours carried from t-2, without their disoccluded holes), carried onto frame t
    along the data's flow (exact on synthetic clips, Farneback on video_folder's): ab_norm
    (B, 2, H, W), zero where not visible. ``hints.carry_self``: at inference the carried colours are
    the network's output, with its own errors, which degrading the truth only imitates. The network
    runs in eval mode here, as at inference: BatchNorm on its running statistics, which this pass,
    all of whose pixels are hinted, leaves unchanged."""
    full = torch.ones_like(batch["l_previous"])
    hint = degrade_carried(batch["ab_previous"], full, model.hint_sampling)
    l_in = batch.get("l_stack_previous", batch["l_previous"])  # frame t-1's stack for stack models
    training = model.training
    model.eval()
    try:
        ab = model.predict_ab(model(l_in, None, hint, full), batch["l"].shape[-2:])
    finally:
        model.train(training)
    return warp(ab, batch["previous_flow"])[0] * batch["previous_valid"]


def temporal_loss(model, out: Tensor, batch: dict) -> Tensor:
    """Lai et al. 2018's short-term temporal loss on ab: the mean L1 distance (normalised ab, summed
    over a and b) between this frame's prediction and the prediction for frame t-1 carried onto it
    along the flow, over pixels visible in both. Frame t-1's prediction is a fixed target (no
    gradient), as the previous output is in recurrent training."""
    if "previous_flow" not in batch:
        raise ValueError("temporal.weight > 0 needs frames that carry their previous frame and its flow: "
                         "data.previous=true (data=synthetic_video or video_folder)")
    size = batch["l"].shape[-2:]
    with torch.no_grad():
        previous = model.predict_ab(model(batch.get("l_stack_previous", batch.get("l_previous"))), size)
    carried, inside = warp(previous, batch["previous_flow"])
    mask = (batch["previous_valid"] & inside).float()
    distance = (model.predict_ab(out, size) - carried).abs().sum(1, keepdim=True)
    return (distance * mask).sum() / mask.sum().clamp_min(1)
