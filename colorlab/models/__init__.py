"""Loss formulations (LightningModules) and how to build or reload them from a config."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from colorlab.config import override
from colorlab.embed import OUTPUT_DIMS
from colorlab.hints import HintSampling
from colorlab.models.base import Colorizer
from colorlab.models.bins import Bins1DColorizer, Bins2DColorizer
from colorlab.models.regression import RegressionColorizer
from colorlab.nets import build_net

FORMULATIONS: dict[str, type[Colorizer]] = {
    "regression": RegressionColorizer,
    "bins1d": Bins1DColorizer,
    "bins2d": Bins2DColorizer,
}


def build_model(cfg: DictConfig, with_data: bool = True) -> Colorizer:
    """The LightningModule of ``cfg.model.name`` with the network of ``cfg.net``.

    with_data=False skips what needs the dataset (a bin prior): for loading a checkpoint.
    """
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    name = model_cfg.pop("name")
    if name not in FORMULATIONS:
        raise ValueError(f"model.name={name!r} is not a formulation; valid: {sorted(FORMULATIONS)}")
    cls = FORMULATIONS[name]
    net_cfg = OmegaConf.to_container(cfg.net, resolve=True)
    if cfg.embed.enabled:
        if "embed_dim" not in net_cfg:
            raise ValueError(f"embed.enabled=true needs a network with fusion (net=koala); net={net_cfg['name']} "
                             "takes no global embedding")
        net_cfg["embed_dim"] = OUTPUT_DIMS[cfg.embed.output]
    hints = OmegaConf.to_container(cfg.hints, resolve=True)
    if hints.pop("enabled"):
        net_cfg["in_channels"] = net_cfg.get("in_channels", 1) + 3  # + hint ab (2) + hint mask (1)
    net = build_net(out_channels=cls.net_out_channels(**model_cfg), **net_cfg)
    model = cls(net=net, optim=OmegaConf.to_container(cfg.optim, resolve=True), **model_cfg,
                **cls.prepare(cfg, with_data))
    model.config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.hints.enabled:
        model.hint_sampling = HintSampling(**hints)
    speed = cfg.get("speed") or {}
    if speed.get("channels_last", False):
        model.net.to(memory_format=torch.channels_last)
    if speed.get("compile", False):
        model.net.compile()
    return model


def load_colorizer(path: str | Path, map_location: str | torch.device = "cpu") -> Colorizer:
    """Rebuild a trained model from a colorlab checkpoint (weights only; no pickled code runs)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"{path} is not a readable checkpoint (truncated or not a torch file): {e}") from e
    if not isinstance(checkpoint, dict) or checkpoint.get("colorlab_config") is None:
        raise ValueError(f"{path} is not a colorlab checkpoint (no 'colorlab_config' entry)")
    # keys added to colorlab after the checkpoint was written take their defaults
    model = build_model(override(OmegaConf.create(checkpoint["colorlab_config"]), []), with_data=False)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()
