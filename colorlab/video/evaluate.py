"""Temporal metrics of a checkpoint on held-out ``synthetic_video`` clips, next to the ground truth.

``python -m colorlab.video.evaluate CKPT [CKPT ...] [--clips 128] [--size 32] [--frames 8]
[--source synthetic|samples|folder:ROOT] [--motion pan|zoom]`` prints a Markdown table: warp error
(exact flow and occlusion), CDC, mode flip rate of the ambiguous diamond, per-frame PSNR and
colourfulness, over ``--clips`` clips of ``--frames`` frames of ``--size`` px (the diamond's mode is a
coin flip per clip: 16 clips moved PSNR by 1.2 dB). Per-frame models see one L frame; models trained with
data.stack > 1 see the stack centred on each frame (clamped at the clip's ends). ``--source samples`` or
``folder:ROOT`` measures on clips panning or zooming (``--motion``) over real photos
(``colorlab/video/photo_clips.py``) instead: they have no bimodal diamond, so flip rate and key colour kept
are absent (None, "—" in the table).
"""

from __future__ import annotations

import sys
from pathlib import Path

from colorlab.cli import error
from colorlab.config import ConfigError, split_arguments, usage_exit_code
from colorlab.data.video_synthetic import SyntheticVideo
from colorlab.video.clips import markdown_table, model_rows, truth_row


def clip_set(source: str, clips: int, size: int, frames: int, seed: int, motion: str):
    """The held-out clips: ``synthetic`` (synthetic_video's val split) or photo clips of ``samples`` /
    ``folder:ROOT`` (``motion`` pan or zoom)."""
    if source == "synthetic":
        if motion != "pan":
            raise ValueError(f"motion={motion!r} applies to photo clips (source samples or folder:ROOT); "
                             "synthetic clips move their shapes")
        return SyntheticVideo(size, clips, seed, "val", frames, p_first=0.5)
    from colorlab.video.photo_clips import photo_clip_set

    return photo_clip_set(source, size, clips, frames, motion, seed)


def evaluate(paths: list[str], clips: int, size: int, frames: int, seed: int = 0, source: str = "synthetic",
             motion: str = "pan") -> list[dict]:
    from colorlab.models import load_colorizer

    data = clip_set(source, clips, size, frames, seed, motion)
    items = [data[i] for i in range(clips)]
    rows = [truth_row(items)]
    for path in paths:
        rows += model_rows(load_colorizer(path), path, items)
    return rows


FLAGS = {"--clips": int, "--size": int, "--frames": int, "--source": str, "--motion": str}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        options, _, checkpoints = split_arguments(argv, (), (), "checkpoints", FLAGS)
        missing = [path for path in checkpoints if not Path(path).is_file()]
        if not checkpoints or missing:
            raise ConfigError(f"checkpoint(s) not found: {missing}" if missing else "give at least one checkpoint")
        numbers = {k: options.get(f"--{k}", default) for k, default in (("clips", 128), ("size", 32), ("frames", 8))}
        if min(numbers.values()) < 1:
            raise ConfigError(f"--clips, --size and --frames must be >= 1. Got {numbers}")
        rows = evaluate(checkpoints, **numbers, source=options.get("--source", "synthetic"),
                        motion=options.get("--motion", "pan"))
    except ValueError as e:  # ConfigError, a source or motion that is not valid, a file that is no checkpoint
        return error("video.evaluate", e)
    print("\n".join(markdown_table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
