"""``python -m colorlab.video ckpt=PATH input=clip.mp4|frames_dir/ out=DIR [hints=keyframe.json] [max_side=2048]
[flow=farneback|raft] [raft_weights=PATH]``

Colourizes a clip frame by frame (stack models see the centred stack; hint models propagate their own
previous colours along the estimated flow, from the first frame's ``hints``: colorize's hints file format,
points in pixels of the input frames) at the checkpoint's working size, recombines the predicted ab
with the full-resolution L, and writes ``DIR/colorized.mp4`` (same size and frame rate),
``DIR/preview.mp4`` (gray | colour [| input when it was in colour]) and ``DIR/metrics.json`` / ``.md``
(CDC; warp error along the estimated flow of the input; the estimator's name). The flow is OpenCV's
Farneback (no weights) by default; ``flow=raft`` uses torchvision's RAFT with the state dict at
``raft_weights`` (small or large, told by its keys; never downloaded). Every input problem is reported
before ``DIR`` is created; an existing ``DIR`` is never written over.
"""

from __future__ import annotations

import json
import re
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def frame_files(folder: Path) -> list[Path]:
    """The image files of a frames folder in frame order: by the number their names end with when they all
    have one (``frame_2.png`` before ``frame_10.png``), which must then run without gaps; else by name."""
    files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS]
    if not files:
        raise ValueError(f"{folder}: no image frames (valid: {sorted(IMAGE_EXTS)})")
    numbers = [re.search(r"(\d+)$", p.stem) for p in files]
    if not all(numbers):
        return sorted(files)
    by_number = sorted(zip((int(m.group(1)) for m in numbers), files, strict=True))
    present = [n for n, _ in by_number]
    missing = sorted(set(range(present[0], present[-1] + 1)) - set(present))
    if missing or len(set(present)) < len(present):
        problem = f"missing frame numbers {missing[:10]}" if missing else "two files with the same frame number"
        raise ValueError(f"{folder}: {problem}{' ...' if len(missing) > 10 else ''}; the frames of a clip must be "
                         f"numbered consecutively ({by_number[0][1].name} .. {by_number[-1][1].name})")
    return [p for _, p in by_number]


def check_constant_rate(path: Path, pts: list, time_base: Fraction) -> None:
    """Temporal metrics and the output's rate assume equal frame intervals: refuse a variable frame rate."""
    if len(pts) < 3 or None in pts:
        return
    intervals = np.diff(np.asarray(pts, dtype=np.float64)) * float(time_base)
    if intervals.min() <= 0 or intervals.max() > 1.02 * intervals.min():
        raise ValueError(f"{path}: variable frame rate (frame intervals {1000 * intervals.min():.1f} to "
                         f"{1000 * intervals.max():.1f} ms); re-encode it at a constant rate first, e.g. "
                         "ffmpeg -i IN -vf fps=25 OUT.mp4")


def read_clip(path: Path, max_side: int) -> tuple[np.ndarray, Fraction]:
    """uint8 (T, H, W, 3) and the frame rate; ValueError naming the file and what is valid."""
    if path.is_dir():
        files = frame_files(path)
        from PIL import Image

        frames = [np.asarray(Image.open(f).convert("RGB")) for f in files]
        sizes = {f.shape for f in frames}
        if len(sizes) > 1:
            raise ValueError(f"{path}: frames of mixed sizes {sorted(s[:2] for s in sizes)}; all must match")
        rate = Fraction(25)
    else:
        import av

        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise ValueError(f"{path}: no video stream (audio only?); give a video file or a frames folder")
                stream = container.streams.video[0]
                rate = stream.average_rate or Fraction(25)
                decoded = list(container.decode(stream))
                frames = [f.to_ndarray(format="rgb24") for f in decoded]
                check_constant_rate(path, [f.pts for f in decoded], stream.time_base)
        except av.error.FFmpegError as e:
            raise ValueError(f"{path}: not a readable video (corrupt or truncated?): {e}") from e
    if not frames:
        raise ValueError(f"{path}: zero frames")
    if max(frames[0].shape[:2]) > max_side:
        raise ValueError(f"{path}: {frames[0].shape[1]}x{frames[0].shape[0]} is over max_side={max_side}")
    return np.stack(frames), Fraction(rate)


def write_clip(path: Path, frames: np.ndarray, rate: Fraction) -> None:
    import av

    h, w = frames.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        # 4:2:0 (what every player decodes) needs even sides; an odd-sized clip keeps its exact size in 4:4:4
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p" if w % 2 == h % 2 == 0 else "yuv444p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def working_size(full: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 frames (T, 3, H, W) area-resized to the network's working size (T, 3, size, size), uint8."""
    return F.interpolate(full.float(), size=(size, size), mode="area").round().clamp(0, 255).to(torch.uint8)


def colorize_video(model, full: torch.Tensor, key: tuple | None = None, flow_fn=None) -> torch.Tensor:
    """uint8 frames (T, 3, H, W) -> colourised uint8 (T, 3, H, W) at the same size: the network sees each
    frame at its working size; hint models propagate their own colours along ``flow_fn``'s flow (Farneback
    by default), from ``key`` = (hint_ab (2, h, w), hint_mask (1, h, w)) on the first frame if given; the
    ab is upsampled and recombined with the frames' full-resolution L."""
    from colorlab.color import denormalize_lab, lab_to_uint8, normalize_lab, uint8_to_lab
    from colorlab.flow import estimated_flows, farneback
    from colorlab.video.clips import colorize_clip, propagate_clip

    small = working_size(full, int(model.config["data"]["size"]))
    if model.hint_sampling is not None:
        _, abs_ = propagate_clip(model, small, *(key or (None, None)), progress=True,
                                 flows=estimated_flows(small, flow_fn or farneback, background=True))
    else:
        _, abs_ = colorize_clip(model, small, progress=True)
    l_full, _ = normalize_lab(uint8_to_lab(full))
    ab_full = F.interpolate(abs_ / 110.0, size=full.shape[-2:], mode="bilinear", align_corners=False)
    return lab_to_uint8(denormalize_lab(l_full, ab_full))


def temporal_metrics(rgb: torch.Tensor, gray: torch.Tensor, source: torch.Tensor | None, flow_fn) -> dict:
    """CDC and the warp error of colourised uint8 frames (T, 3, H, W) along the flow ``flow_fn`` estimates
    on the gray frames (T, H, W), checked forward-backward; with the ``source`` clip in colour, its own
    warp error as the floor."""
    from colorlab.flow import checked_flow
    from colorlab.video.metrics import cdc, warp_error

    if len(rgb) < 2:
        return {"cdc": None}
    g = gray.numpy()
    pairs = [checked_flow(g[t], g[t + 1], flow_fn) for t in range(len(g) - 1)]  # forward, visible in t+1
    flow, mask = torch.stack([f for f, _ in pairs]), torch.stack([m for _, m in pairs])
    metrics = {"cdc": cdc(rgb), "warp_error": warp_error(rgb.double() / 255, flow, mask)}
    if source is not None:
        metrics["warp_error_input"] = warp_error(source.double() / 255, flow, mask)
    return metrics


def main(argv: list[str]) -> int:
    from colorlab.cli import error
    from colorlab.color import normalize_lab, uint8_to_lab
    from colorlab.config import ConfigError, compute_device, key_value_options, usage_exit_code
    from colorlab.hints import encode_hints, load_hints
    from colorlab.inference import DEFAULT_HINT_PATCH
    from colorlab.models import load_colorizer
    from colorlab.video.flow import FLOW_NAMES, flow_estimator

    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        args = key_value_options(argv, ("ckpt", "input", "out", "max_side", "hints", "flow", "raft_weights"),
                                 required=("ckpt", "input", "out"))
    except ConfigError as e:
        return error("video", f"{e} (flow={'|'.join(FLOW_NAMES)})")
    src, out = Path(args["input"]), Path(args["out"])
    if out.exists():
        return error("video", f"out={out} exists; colorlab.video never writes over anything, give a new directory")
    try:
        if "raft_weights" in args and args.get("flow") != "raft":
            raise ValueError("raft_weights= is for flow=raft; add flow=raft or drop it")
        flow_fn = flow_estimator(args.get("flow", "farneback"), args.get("raft_weights"))
        if not src.exists():
            raise ValueError(f"{src}: no such file or folder")
        frames, rate = read_clip(src, int(args.get("max_side", 2048)))
        model = load_colorizer(args["ckpt"], compute_device())
        size = int(model.config["data"]["size"])
        key = None
        if "hints" in args:
            if model.hint_sampling is None:
                raise ValueError("hints= needs a checkpoint trained with hints (experiment=hints_unet or "
                                 "video_propagate); this one is " + str(model.config.get("experiment")))
            height, width = frames.shape[1:3]
            hint_ab, hint_mask = encode_hints(load_hints(args["hints"], width, height), (height, width),
                                              (size, size), DEFAULT_HINT_PATCH)
            key = (hint_ab[0], hint_mask[0])
    except (ValueError, FileNotFoundError) as e:
        return error("video", e)
    full = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    rgb = colorize_video(model, full, key, flow_fn)
    l_full = normalize_lab(uint8_to_lab(full))[0]
    gray = ((l_full + 0.5) * 255).round().clamp(0, 255).to(torch.uint8)
    was_colour = bool((uint8_to_lab(working_size(full, size))[:, 1:].abs() > 5).float().mean() > 0.01)
    panels = [gray.expand(-1, 3, -1, -1), rgb] + ([full] if was_colour else [])
    out.mkdir(parents=True)
    write_clip(out / "colorized.mp4", rgb.permute(0, 2, 3, 1).numpy(), rate)
    write_clip(out / "preview.mp4", torch.cat(panels, dim=3).permute(0, 2, 3, 1).numpy(), rate)
    metrics = {"frames": len(rgb), "fps": float(rate), "flow": getattr(flow_fn, "name", "farneback"),
               **temporal_metrics(rgb, gray[:, 0], full if was_colour else None, flow_fn)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "metrics.md").write_text("| metric | value |\n|---|---|\n" + "".join(
        f"| {k} | {v} |\n" for k, v in metrics.items()))
    print(f"wrote {out}/colorized.mp4, preview.mp4, metrics.json: {metrics}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
