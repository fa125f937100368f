"""Loss formulations (LightningModules) and how to build or reload them from a config."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from colorlab.bins import ZHANG_GRID, gamut_centers, smooth_prior
from colorlab.config import override
from colorlab.embed import OUTPUT_DIMS
from colorlab.hints import HintSampling
from colorlab.models.base import Colorizer
from colorlab.models.bins import Bins1DColorizer, Bins2DColorizer
from colorlab.models.regression import RegressionColorizer
from colorlab.models.siggraph17 import Siggraph17Colorizer
from colorlab.nets import build_net

AUC_PRIOR_KEY = "val_metrics.auc.prior"

FORMULATIONS: dict[str, type[Colorizer]] = {
    "regression": RegressionColorizer,
    "bins1d": Bins1DColorizer,
    "bins2d": Bins2DColorizer,
    "siggraph17": Siggraph17Colorizer,
}


def placeholder_prior(cfg: DictConfig) -> Tensor:
    """Pixel counts of the right shape (uniform) for building a model whose checkpoint then fills its
    centres, prior and weights."""
    return torch.ones(len(gamut_centers(cfg.prior.grid)), dtype=torch.float64)


# Networks whose fp32 steps are slower in NHWC on a GPU: eccv16_full at 256 px, width 64, batch 64 on an H200
# (cuDNN TF32 off) trained at 16 img/s NHWC vs 122 NCHW, while unet_bins went 1132 vs 849. siggraph17 shares
# eccv16's dilated 3x3 blocks and is assumed alike until measured: benchmarks/gpu.sh times eccv16_full;
# benchmarks/speed_keys.py --device cuda --experiment siggraph17 --set data.size=256 would time siggraph17.
NCHW_FOR_FP32_ON_GPU = ("eccv16", "siggraph17")


def channels_last(setting: bool | str, trainer: DictConfig, net_name: str) -> bool:
    """Whether the network runs in NHWC. ``speed.channels_last=auto`` picks the format measured faster on the
    device and precision the trainer will use: on the CPU NHWC (1.16-1.28x for 64 px nets, docs/benchmarks.md);
    on a GPU NHWC under mixed precision (H200, bf16: eccv16_full 1393 vs 1127 img/s, unet_bins 3002 vs 1181)
    and in fp32 except for NCHW_FOR_FP32_ON_GPU. ``true``/``false`` force it."""
    if isinstance(setting, bool):
        return setting
    if setting != "auto":
        raise ValueError(f"speed.channels_last must be true, false or auto. Got {setting!r}")
    accelerator = str(trainer.get("accelerator", "auto"))
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    full_precision = str(trainer.get("precision", "32-true")) in ("32", "32-true", "64", "64-true")
    return not (on_gpu and full_precision and net_name in NCHW_FOR_FP32_ON_GPU)


def build_model(cfg: DictConfig, prior: Tensor) -> Colorizer:
    """The LightningModule of ``cfg.model.name`` with the network of ``cfg.net``.

    ``prior``: the training data's pixel counts (Q,) per in-gamut ab bin (``gamut_centers(cfg.prior.grid)``),
    computed on the data side (colorlab.data.prior.load_or_compute_prior) or ``placeholder_prior(cfg)`` when a
    checkpoint's state_dict will fill what derives from it. Bin formulations take their centres and prior
    from it; every formulation takes its smoothed form for ``val/auc_rebalanced``.
    """
    centers = gamut_centers(cfg.prior.grid)
    if prior.shape != (len(centers),):
        raise ValueError(f"prior must hold one count per in-gamut bin of prior.grid={cfg.prior.grid}, shape "
                         f"({len(centers)},). Got {tuple(prior.shape)}")
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    name = model_cfg.pop("name")
    if name not in FORMULATIONS:
        raise ValueError(f"model.name={name!r} is not a formulation; valid: {sorted(FORMULATIONS)}")
    cls = FORMULATIONS[name]
    # the rebalanced AuC is defined on Zhang's 313 bins (prior.grid=10)
    data_prior = smooth_prior(prior, centers, cfg.prior.sigma) if cfg.prior.grid == ZHANG_GRID else None
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
                data_prior=data_prior, **cls.from_data_prior(cfg, prior))
    model.config = OmegaConf.to_container(cfg, resolve=True)
    if cfg.hints.enabled:
        model.hint_sampling = HintSampling(**hints)
    model.temporal_weight = float((cfg.get("temporal") or {}).get("weight", 0.0))
    if model.temporal_weight < 0:
        raise ValueError(f"temporal.weight must be >= 0. Got {model.temporal_weight}")
    speed = cfg.get("speed") or {}
    if channels_last(speed.get("channels_last", False), cfg.trainer, cfg.net.name):
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
    cfg = override(OmegaConf.create(checkpoint["colorlab_config"]), [])
    model = build_model(cfg, placeholder_prior(cfg))
    state = checkpoint["state_dict"]
    if AUC_PRIOR_KEY not in state:  # a checkpoint without the data prior: no auc_rebalanced
        state = {**state, AUC_PRIOR_KEY: torch.zeros_like(model.val_metrics.auc.prior)}
    if hasattr(model, "grid_prior") and "grid_prior" not in state:  # frequent bins without a grid prior:
        state = {**state, "grid_centers": model.grid_centers,      # decoded over the kept bins
                 "grid_prior": torch.zeros_like(model.grid_prior)}
    model.load_state_dict(state)
    return model.eval()
