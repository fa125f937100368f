"""Networks: plain nn.Modules (no Lightning), built by name from the ``net`` config group.

Every network takes L (B, in_channels, H, W) and returns ``out_channels`` maps at
H / output_stride x W / output_stride; the formulation chooses out_channels.
H and W must be multiples of ``size_multiple``.
"""

from __future__ import annotations

from torch import nn

from colorlab.nets.plain import PlainCNN
from colorlab.nets.unet import UNet

NETS: dict[str, type[nn.Module]] = {"plain": PlainCNN, "unet": UNet}


def build_net(name: str, out_channels: int, **kwargs) -> nn.Module:
    if name not in NETS:
        raise ValueError(f"net.name={name!r} is not a network; valid: {sorted(NETS)}")
    return NETS[name](out_channels=out_channels, **kwargs)
