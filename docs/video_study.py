"""Issue 13's comparison: per-frame vs temporal formulations on held-out synthetic clips.

``python docs/video_study.py FRAME.ckpt STACK.ckpt PROPAGATE.ckpt [--clips 16] [--out docs/results/video]``

Prints the temporal table of ``colorlab.video.evaluate`` (warp error along the exact flow, CDC, mode
flip rate, PSNR, colourfulness, key colour kept), each temporal row's ratios to the per-frame
baseline against the issue's targets, and writes ``table.md`` and ``strip.png`` (frames 0-7 of one
held-out clip: ground truth, per-frame, stack, propagation with no hints, key frame + propagation).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from colorlab.color import normalize_lab, uint8_to_lab
from colorlab.models import load_colorizer
from colorlab.video.data import SyntheticVideo
from colorlab.video.evaluate import colorize_clip, markdown_table, model_rows, propagate_clip, truth_row


def targets(rows: list[dict], base: dict) -> list[str]:
    """Each temporal row against issue 13's targets: warp error <= 0.5x, flip rate <= 0.2x, PSNR within
    0.5 dB of the per-frame baseline; key colour kept >= 90% for key-frame propagation."""
    lines = []
    for r in rows:
        checks = [f"warp {r['warp_error'] / base['warp_error']:.2f}x (<= 0.5)",
                  f"flips {r['flip_rate'] / base['flip_rate']:.2f}x (<= 0.2)",
                  f"PSNR {r['psnr'] - base['psnr']:+.2f} dB (>= -0.5)"]
        ok = (r["warp_error"] <= 0.5 * base["warp_error"] and r["flip_rate"] <= 0.2 * base["flip_rate"]
              and r["psnr"] >= base["psnr"] - 0.5)
        if "key frame" in r["model"]:
            checks.append(f"key colour kept {100 * r['key_colour_kept']:.1f}% (>= 90%)")
            ok = r["key_colour_kept"] >= 0.9
            checks = checks[-1:]
        lines.append(f"- {r['model']}: {', '.join(checks)}: {'PASS' if ok else 'FAIL'}")
    return lines


def strip(frame_model, stack_model, propagate_model, clip: dict, scale: int = 3) -> Image.Image:
    key = normalize_lab(uint8_to_lab(clip["rgb"][:1]))[1][0]
    exact = list(zip(clip["back_flow"], clip["back_valid"], strict=True))
    rows = [("ground truth", clip["rgb"]), ("per-frame", colorize_clip(frame_model, clip["rgb"])[0]),
            ("stack", colorize_clip(stack_model, clip["rgb"])[0]),
            ("propagation, no hints", propagate_clip(propagate_model, clip["rgb"], flows=exact)[0]),
            ("key frame + propagation", propagate_clip(propagate_model, clip["rgb"], key, flows=exact)[0])]
    t, _, h, w = clip["rgb"].shape
    label_w = 150
    canvas = Image.new("RGB", (label_w + t * w * scale, len(rows) * h * scale), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, frames) in enumerate(rows):
        draw.text((4, i * h * scale + h * scale // 2 - 6), name, fill="black")
        for j in range(t):
            tile = Image.fromarray(frames[j].permute(1, 2, 0).numpy()).resize((w * scale, h * scale), Image.NEAREST)
            canvas.paste(tile, (label_w + j * w * scale, i * h * scale))
    return canvas


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("frame")
    p.add_argument("stack")
    p.add_argument("propagate")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--strip-clip", type=int, default=3)
    p.add_argument("--out", default="docs/results/video")
    a = p.parse_args()
    torch.manual_seed(0)
    models = [load_colorizer(c) for c in (a.frame, a.stack, a.propagate)]
    size = int(models[0].config["data"]["size"])
    data = SyntheticVideo(size, a.clips, 0, "val", 8)
    items = [data[i] for i in range(a.clips)]
    rows = [truth_row(items)]
    for name, model in zip(("video_frame", "video_stack", "video_propagate"), models, strict=True):
        rows += model_rows(model, name, items)
    base = rows[1]
    temporal = [r for r in rows[2:] if "frame by frame" not in r["model"]]
    lines = markdown_table(rows) + ["", *targets(temporal, base)]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    strip(*models, items[a.strip_clip]).save(out / "strip.png")
    print(f"wrote {out / 'table.md'}, {out / 'strip.png'}")


if __name__ == "__main__":
    main()
