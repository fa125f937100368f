"""Zhang's released weights (richzhang/colorization's ``eccv16``/``siggraph17`` state dicts and
colorization-pytorch's ``latest_net_G.pth``) as colorlab models: the key mapping, the checks that name
what differs, and the matching formulation. ``python -m colorlab.import_weights`` writes them as a
checkpoint; ``init=`` of colorlab.fit starts from them. Loading never runs pickled code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import Tensor

from colorlab.bins import gamut_centers, rebalance_weights
from colorlab.color import AB_NORM
from colorlab.config import compose
from colorlab.io import atomic_save

KINDS = ("eccv16", "siggraph17")
RELEASED_WIDTH, RELEASED_SIZE = 64, 256  # the released nets' width; the demo's working size
# colorlab names -> released names where they differ (the rest are equal)
ECCV16_RENAMES = {"model8.2.0.": "model8.2.", "model8.2.2.": "model8.4.", "head.": "model8.6."}
SIGGRAPH17_WRAPPED = ("model8up", "model3short8", "model9up", "model2short9", "model10up", "model1short10",
                      "model_class", "model_out")  # a one-layer nn.Sequential in the release: name.0.*
ECCV16_BIN_MAP = "model_out.weight"  # (2, 313, 1, 1): the bin centres / 110, the 313 -> 2 expectation
MARKERS = {"eccv16": ECCV16_BIN_MAP, "siggraph17": "model10up.0.weight"}  # a key only that release has
OPTIONAL = "num_batches_tracked"  # BatchNorm counters: absent from converted weights


class WeightsError(ValueError):
    """A file that is not the expected release; the message names what differs and what was expected."""


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """The tensors of a released .pth, with any DataParallel ``module.`` prefix dropped."""
    if not path.is_file():
        raise WeightsError(f"{path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only refuses classes, functions, whole pickled models
        raise WeightsError(f"{path} holds pickled code (e.g. a whole model saved with torch.save(model)), which "
                           "colorlab never runs; save the weights alone, torch.save(model.state_dict(), PATH). "
                           f"({str(e).splitlines()[0][:160]})") from None
    except Exception as e:  # truncated download, not a torch file
        raise WeightsError(f"{path} cannot be read as torch weights ({type(e).__name__}: {str(e)[:160]}); it may be "
                           "truncated: download it again") from None
    if isinstance(state, dict) and "colorlab_config" in state:
        raise WeightsError(f"{path} is already a colorlab checkpoint: give it to the commands as ckpt={path}")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def released_name(kind: str, name: str) -> str:
    """The released state dict's name of colorlab's network tensor ``name``."""
    if kind == "eccv16":
        for ours, theirs in ECCV16_RENAMES.items():
            if name.startswith(ours):
                return theirs + name.removeprefix(ours)
        return name
    module, _, rest = name.partition(".")
    return f"{module}.0.{rest}" if module in SIGGRAPH17_WRAPPED else name


def _listing(names: set[str]) -> str:
    names = sorted(names)
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def check_keys(kind: str, path: Path, released: dict[str, Tensor], expected: dict[str, torch.Size]) -> None:
    """Raise one line when the file is another model, or keys are missing, unexpected or of another shape."""
    other = next(k for k in KINDS if k != kind)
    if MARKERS[other] in released and MARKERS[kind] not in released:
        raise WeightsError(f"{path} holds the {other} generator (it has {MARKERS[other]}), not {kind}: run "
                           f"python -m colorlab.import_weights {other} {path}")
    missing = {k for k in expected if k not in released and not k.endswith(OPTIONAL)}
    unexpected = set(released) - set(expected)
    if missing or unexpected:
        parts = ([f"missing {_listing(missing)}"] if missing else []) + (
            [f"unexpected {_listing(unexpected)}"] if unexpected else [])
        raise WeightsError(f"{path} is not the released {kind} state dict: {'; '.join(parts)}; expected the "
                           f"{len(expected)} tensors of {kind} at width {RELEASED_WIDTH} (model1.0.weight ...)")
    for name, shape in expected.items():
        if name in released and released[name].shape != shape:
            raise WeightsError(f"{path}: tensor {name} has shape {tuple(released[name].shape)}, the released {kind} "
                               f"has {tuple(shape)}")


def bin_order(path: Path, bin_map: Tensor) -> Tensor:
    """The release's index of each of colorlab's 313 bins (313,), read from model_out's weight (2, 313, 1, 1),
    which holds the bin centres / 110."""
    released = bin_map[:, :, 0, 0].T.double() * AB_NORM  # (313, 2) Lab units
    ours = gamut_centers().double()
    distance = torch.cdist(ours, released)  # (313, 313)
    nearest = distance.argmin(dim=1)
    if distance.min(dim=1).values.max() > 1e-2 or len(set(nearest.tolist())) != len(ours):
        raise WeightsError(f"{path}: {ECCV16_BIN_MAP} does not hold Zhang's 313 bin centres / 110 (the weights "
                           "of the release's 313 -> 2 expectation), so the class order cannot be recovered")
    return nearest


def released_config(kind: str, mask_offset: float):
    """The run config an imported checkpoint carries: the matching experiment at the release's size."""
    if kind == "eccv16":
        overrides = [f"net.width={RELEASED_WIDTH}", "model.temperature=1.0"]
    else:
        overrides = [f"net.width={RELEASED_WIDTH}", f"net.mask_offset={mask_offset}"]
    cfg = compose("eccv16_full" if kind == "eccv16" else "siggraph17",
                  [*overrides, f"data.size={RELEASED_SIZE}", "logger=none", "run_dir=released"])
    cfg.experiment = f"{kind}_released"
    cfg.description = f"Zhang's released {kind} weights, imported"
    return cfg


def load_prior(path: Path, order: Tensor | None) -> Tensor:
    """A (313,) prior over the release's bins from a .npy (no pickles), in colorlab's bin order."""
    try:
        prior = torch.from_numpy(np.load(path, allow_pickle=False)).double().flatten()
    except (OSError, ValueError) as e:
        raise WeightsError(f"--prior {path} cannot be read as a .npy array ({e})") from None
    if prior.shape != (313,) or (prior < 0).any() or prior.sum() <= 0:
        raise WeightsError(f"--prior {path} must hold 313 non-negative probabilities (prior_probs.npy). "
                           f"Got shape {tuple(prior.shape)}")
    prior = prior / prior.sum()
    return prior if order is None else prior[order]


def import_released(kind: str, path: Path, prior_path: Path | None = None, mask_offset: float = 0.0):
    """The colorlab model (eval mode) holding the released weights of ``kind`` read from ``path``."""
    from colorlab.models import build_model, placeholder_prior

    if kind not in KINDS:
        raise WeightsError(f"unknown model {kind!r}; valid: {', '.join(KINDS)}")
    cfg = released_config(kind, mask_offset)
    model = build_model(cfg, placeholder_prior(cfg))
    ours = model.net.state_dict()
    expected = {released_name(kind, k): v.shape for k, v in ours.items()}
    if kind == "eccv16":
        expected[ECCV16_BIN_MAP] = torch.Size((2, 313, 1, 1))
    released = read_state_dict(path)
    check_keys(kind, path, released, expected)
    order = bin_order(path, released[ECCV16_BIN_MAP]) if kind == "eccv16" else None
    state = {}
    for name, tensor in ours.items():
        value = released.get(released_name(kind, name), tensor)  # absent BatchNorm counters keep 0
        state[name] = value[order] if order is not None and name.startswith("head.") else value
    model.net.load_state_dict(state)
    # the training prior is the release's when given; otherwise unknown: uniform (no rebalancing), and no
    # auc_rebalanced (a zero prior leaves it out) rather than one weighted by a made-up prior
    prior = load_prior(prior_path, order) if prior_path is not None else None
    model.val_metrics.auc.prior.copy_(prior if prior is not None else torch.zeros(313, dtype=torch.float64))
    if hasattr(model, "weights"):  # eccv16's rebalancing, as in the release's training
        prior = prior if prior is not None else torch.full((313,), 1 / 313, dtype=torch.float64)
        model.prior.copy_(prior.float())
        model.weights.copy_(rebalance_weights(prior, cfg.model.lam, cfg.model.rebalance_uniform).float())
    model.config = OmegaConf.to_container(cfg, resolve=True)
    return model.eval()


def save_checkpoint(model, out: Path, source: Path) -> Path:
    """A checkpoint every colorlab command reads (load_colorizer): the config and the state dict."""
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_save({"colorlab_config": model.config, "state_dict": model.state_dict(), "imported_from": str(source)},
                out)
    return out
