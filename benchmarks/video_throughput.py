"""Frames per second of the colorlab.video pipeline at 256x256 on this CPU, decoding and encoding
included (PyAV), for the per-frame (video_frame), stack (video_stack) and propagation
(video_propagate: + two Farneback flows per frame) formulations. Weights are random (speed does not
depend on them). Target: each temporal formulation costs at most 1.5x the per-frame one.
"""

from __future__ import annotations

import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from colorlab.config import compose
from colorlab.models import build_model, placeholder_prior
from colorlab.video.__main__ import read_clip, write_clip
from colorlab.video.clips import colorize_clip, propagate_clip

FRAMES, SIZE = 16, 256


def run(name: str, src: Path, dst: Path) -> float:
    cfg = compose(name, [f"data.size={SIZE}"])
    model = build_model(cfg, placeholder_prior(cfg)).eval()
    start = time.perf_counter()
    frames, rate = read_clip(src, 4096)
    rgb = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    out = propagate_clip(model, rgb)[0] if model.hint_sampling is not None else colorize_clip(model, rgb)[0]
    write_clip(dst, out.permute(0, 2, 3, 1).numpy(), rate)
    return FRAMES / (time.perf_counter() - start)


def main() -> int:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.mp4"
        write_clip(src, np.random.default_rng(0).integers(0, 256, (FRAMES, SIZE, SIZE, 3), np.uint8), Fraction(25))
        fps = {n: run(n, src, Path(tmp) / f"{n}.mp4") for n in ("video_frame", "video_stack", "video_propagate")}
    base = fps["video_frame"]
    for n, v in fps.items():
        print(f"{n}: {v:.2f} frames/s, cost {base / v:.2f}x per-frame")
    bad = [n for n in ("video_stack", "video_propagate") if base / fps[n] > 1.5]
    if bad:
        print(f"target: FAIL ({', '.join(f'{n} costs {base / fps[n]:.2f}x > 1.5x' for n in bad)})")
        return 1
    print("target: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
