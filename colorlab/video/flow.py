"""Flow estimators for video inference: OpenCV's Farneback (no weights, in ``colorlab.flow``) or
torchvision's RAFT from a state dict given by path (never downloaded). Conventions: ``colorlab.flow``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from colorlab.flow import farneback

FLOW_NAMES = ("farneback", "raft")
RAFT_MIN_SIDE = 128  # RAFT's correlation pyramid needs feature maps of at least 16 px at 1/8 scale
RAFT_ITERATIONS = 12  # refinement steps (torchvision's default)


class RaftFlow:
    """torchvision's RAFT (small or large, told apart by the weights' keys) as ``farneback(gray_a, gray_b)``:
    uint8 gray frames a, b (H, W) -> float32 (2, H, W) (dx, dy) from a to b.

    The frames go in as RGB in [-1, 1] (gray replicated), a side under 128 px is first upscaled (the flow is
    scaled back), sides are padded (replicate, right and bottom) to multiples of 8 and the flow cropped back."""

    def __init__(self, model: torch.nn.Module, name: str, num_flow_updates: int | None = None):
        self.model, self.name, self.num_flow_updates = model.eval(), name, num_flow_updates

    @torch.no_grad()
    def __call__(self, gray_a: np.ndarray, gray_b: np.ndarray) -> np.ndarray:
        if gray_a.shape != gray_b.shape or gray_a.ndim != 2:
            raise ValueError(f"{self.name} needs two gray frames of one size. Got {gray_a.shape} and {gray_b.shape}")
        h, w = gray_a.shape
        param = next(iter(self.model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        pair = torch.from_numpy(np.stack([gray_a, gray_b])).to(device=device, dtype=torch.float32)
        pair = (pair / 127.5 - 1)[:, None].expand(-1, 3, -1, -1)
        scale = max(RAFT_MIN_SIDE / min(h, w), 1.0)
        hs, ws = (max(RAFT_MIN_SIDE, round(h * scale)), max(RAFT_MIN_SIDE, round(w * scale))) if scale > 1 else (h, w)
        if (hs, ws) != (h, w):
            pair = F.interpolate(pair, size=(hs, ws), mode="bilinear", align_corners=False).clamp(-1, 1)
        pair = F.pad(pair, (0, -ws % 8, 0, -hs % 8), mode="replicate")
        steps = self.num_flow_updates or RAFT_ITERATIONS
        flow = self.model(pair[:1], pair[1:], num_flow_updates=steps)[-1][:, :, :hs, :ws]
        if (hs, ws) != (h, w):
            flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
            flow = flow * torch.tensor([w / ws, h / hs], dtype=flow.dtype, device=flow.device)[:, None, None]
        return np.ascontiguousarray(flow[0].float().cpu().numpy())


def load_raft(weights: str | Path) -> RaftFlow:
    """RAFT with the state dict saved at ``weights`` (``torch.save(model.state_dict())``, e.g. torchvision's
    raft_large_C_T_SKHT_V2-ff5fadd5.pth or raft_small_C_T_V2-01064c6d.pth); small or large by its keys.
    FileNotFoundError / ValueError naming the file and what is valid."""
    from torchvision.models.optical_flow import raft_large, raft_small

    path = Path(weights)
    valid = "a RAFT state dict saved by torch.save(model.state_dict()) (torchvision raft_small or raft_large)"
    if not path.is_file():
        raise FileNotFoundError(f"raft_weights={path}: no such file; give {valid}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike: not a loadable torch file
        raise ValueError(f"raft_weights={path}: not a torch file loadable with weights_only=True ({e}); "
                         f"give {valid}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"raft_weights={path}: holds a {type(state).__name__}, not a state dict of tensors; "
                         f"give {valid}")
    keys = set(state)
    fits = []
    for name, build in (("raft-small", raft_small), ("raft-large", raft_large)):
        model = build(weights=None, progress=False)
        missing, unexpected = set(model.state_dict()) - keys, keys - set(model.state_dict())
        if not missing and not unexpected:
            try:
                model.load_state_dict(state)
            except RuntimeError as e:
                raise ValueError(f"raft_weights={path}: has {name}'s keys but not its shapes ({e}); "
                                 f"give {valid}") from None
            return RaftFlow(model, name)
        fits.append((len(missing) + len(unexpected), name, sorted(missing)[:3], sorted(unexpected)[:3]))
    _, name, missing, unexpected = min(fits)
    raise ValueError(f"raft_weights={path}: its {len(keys)} keys fit neither raft-small nor raft-large "
                     f"(closest {name}: missing e.g. {missing}, unexpected e.g. {unexpected}); give {valid}")


def flow_estimator(name: str = "farneback", weights: str | Path | None = None
                   ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A flow function like ``farneback(gray_a, gray_b)``: ``"farneback"`` (OpenCV, no weights) or ``"raft"``
    (torchvision RAFT, small or large by the keys of the state dict at ``weights``, which it needs)."""
    if name == "farneback":
        return farneback
    if name == "raft":
        if weights is None:
            raise ValueError("flow=raft needs raft_weights=PATH: a RAFT state dict (torchvision raft_small or "
                             "raft_large, e.g. raft_large_C_T_SKHT_V2-ff5fadd5.pth); nothing is downloaded")
        return load_raft(weights)
    raise ValueError(f"flow={name}: unknown flow estimator; valid: {', '.join(FLOW_NAMES)}")
