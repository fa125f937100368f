"""Optical flow helpers.

Convention: ``flow[t]`` is the *forward* flow from frame t to frame t+1, float (2, H, W) in pixels,
channel 0 = dx (columns), channel 1 = dy (rows): the content at pixel (y, x) of frame t is at
(y + dy, x + dx) in frame t+1. ``warp(frame_{t+1}, flow[t])`` samples frame t+1 there, so it
brings frame t+1 back onto frame t's pixel grid (backward warping, as in Lai et al. 2018).

Estimators of real clips' flow (``flow_estimator``): OpenCV's Farneback (no weights), or torchvision's
RAFT from a state dict given by path (never downloaded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def _check_flow(flow: Tensor, height: int, width: int) -> None:
    if flow.dim() != 4 or flow.shape[1] != 2 or tuple(flow.shape[-2:]) != (height, width):
        raise ValueError(f"flow must be (B, 2, {height}, {width}) in pixels (dx, dy). Got {tuple(flow.shape)}")


def warp(image: Tensor, flow: Tensor, mode: str = "bilinear") -> tuple[Tensor, Tensor]:
    """Sample ``image`` (B, C, H, W) at x + flow: returns (warped image, in-bounds mask (B, 1, H, W) bool).

    Integer flows with ``mode="nearest"`` or ``"bilinear"`` reproduce pixels exactly."""
    b, _, h, w = image.shape
    _check_flow(flow, h, w)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype, device=flow.device),
                            torch.arange(w, dtype=flow.dtype, device=flow.device), indexing="ij")
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    inside = ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1))[:, None]
    # align_corners=True: -1 and 1 are the centres of the first and last pixels
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)
    out = F.grid_sample(image.to(flow.dtype), grid, mode=mode, padding_mode="border", align_corners=True)
    return out, inside


def consistency_mask(flow_fw: Tensor, flow_bw: Tensor, alpha: float = 0.01, beta: float = 0.5) -> Tensor:
    """Non-occluded pixels of an *estimated* forward flow by forward-backward consistency
    (Sundaram et al. 2010, as used by Lai et al. 2018): |f + b(x+f)|^2 < alpha(|f|^2 + |b(x+f)|^2) + beta."""
    bw, inside = warp(flow_bw, flow_fw)
    lhs = (flow_fw + bw).pow(2).sum(1, keepdim=True)
    rhs = alpha * (flow_fw.pow(2).sum(1, keepdim=True) + bw.pow(2).sum(1, keepdim=True)) + beta
    return (lhs < rhs) & inside


def farneback(gray_a: np.ndarray, gray_b: np.ndarray) -> np.ndarray:
    """OpenCV's Farneback flow (no weights) from uint8 gray frame a to b: float32 (2, H, W) (dx, dy)."""
    import cv2

    if gray_a.shape != gray_b.shape or gray_a.ndim != 2:
        raise ValueError(f"farneback needs two gray frames of one size. Got {gray_a.shape} and {gray_b.shape}")
    flow = cv2.calcOpticalFlowFarneback(gray_a, gray_b, None, pyr_scale=0.5, levels=3, winsize=15,
                                        iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
    return np.ascontiguousarray(flow.transpose(2, 0, 1))


def checked_flow(gray_a: np.ndarray, gray_b: np.ndarray, flow_fn=farneback) -> tuple[Tensor, Tensor]:
    """The estimated flow from gray frame a to b (2, H, W) and the pixels of a it holds for (1, H, W) bool:
    ``flow_fn`` both ways, checked forward-backward (``consistency_mask``)."""
    fwd = torch.from_numpy(flow_fn(gray_a, gray_b))[None]
    bwd = torch.from_numpy(flow_fn(gray_b, gray_a))[None]
    return fwd[0], consistency_mask(fwd, bwd)[0]


class _Pending(Sequence):
    """A list of values computed by futures: indexing waits for that one."""

    def __init__(self, futures: list):
        self.futures = futures

    def __len__(self) -> int:
        return len(self.futures)

    def __getitem__(self, i):
        return self.futures[i].result()


def estimated_flows(rgb_u8: torch.Tensor, flow_fn=farneback, background: bool = False) -> Sequence:
    """For t = 1 .. T-1: (flow from frame t back to t-1 (2, H, W), its non-occluded pixels (1, H, W) bool),
    estimated by ``flow_fn(gray_a, gray_b)`` (default OpenCV Farneback; see ``flow.flow_estimator``) on the
    gray frames and checked forward-backward. ``background``: computed in a thread, in order, while the
    caller runs the network (the flows need only the gray frames; OpenCV and torch release the GIL)."""
    from colorlab.color import normalize_lab, uint8_to_lab

    gray = ((normalize_lab(uint8_to_lab(rgb_u8))[0][:, 0] + 0.5) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    if not background:
        return [checked_flow(gray[t], gray[t - 1], flow_fn) for t in range(1, len(gray))]
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flow")
    pending = _Pending([pool.submit(checked_flow, gray[t], gray[t - 1], flow_fn) for t in range(1, len(gray))])
    pool.shutdown(wait=False)  # the queued pairs still run; the thread ends after the last
    return pending


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
