"""Networks: plain nn.Modules (no Lightning), built by name from the ``net`` config group.

Every network takes L (B, in_channels, H, W) (koala also a global embedding (B, embed_dim))
and returns ``out_channels`` maps at
H / output_stride x W / output_stride; the formulation chooses out_channels. siggraph17 returns two
tensors (regression ab, class logits), read by its own formulation.
H and W must be multiples of ``size_multiple``.
"""

from __future__ import annotations

from torch import nn

from colorlab.nets.eccv16 import ECCV16
from colorlab.nets.koala import Koala
from colorlab.nets.plain import PlainCNN
from colorlab.nets.siggraph17 import SIGGRAPH17
from colorlab.nets.unet import UNet

NETS: dict[str, type[nn.Module]] = {"plain": PlainCNN, "unet": UNet, "eccv16": ECCV16, "koala": Koala,
                                 "siggraph17": SIGGRAPH17}


def build_net(name: str, out_channels: int, **kwargs) -> nn.Module:
    if name not in NETS:
        raise ValueError(f"net.name={name!r} is not a network; valid: {sorted(NETS)}")
    return NETS[name](out_channels=out_channels, **kwargs)
