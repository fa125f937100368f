"""The video comparison (docs/video.md): per-frame vs temporal formulations on held-out synthetic clips.

``python scripts/video_study.py FRAME.ckpt STACK.ckpt PROPAGATE.ckpt [FRAME STACK PROPAGATE ...]
[--clips 128] [--out docs/results/video]``: one checkpoint triple per training seed.

Prints the temporal table of ``colorlab.video.evaluate`` (warp error along the exact flow, CDC, mode
flip rate, PSNR, colourfulness, key colour kept) of every triple, each temporal row's ratios to the
per-frame baseline of the same triple against the issue's targets, the same for the mean over triples,
and writes them to ``table.md``, and ``strip.png`` (frames 0-7 of one held-out clip, first triple:
ground truth, per-frame, stack, propagation with no hints, key frame + propagation).

Clips: 128 by default. Without hints the diamond's mode is a coin flip per clip that propagation keeps
for the whole clip, so on 16 clips the per-frame baseline's PSNR moved 1.2 dB against 128 (seed 1).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from colorlab.color import normalize_lab, uint8_to_lab
from colorlab.data.video_synthetic import SyntheticVideo
from colorlab.models import load_colorizer
from colorlab.video.clips import colorize_clip, markdown_table, model_rows, propagate_clip, truth_row


def _ratio(value: float, base: float) -> float:
    return value / base if base else (0.0 if value == 0 else float("inf"))  # a baseline with no flips


def ratios(rows: list[dict]) -> list[dict]:
    """The temporal rows of one triple's table with their warp, flip and PSNR against its per-frame row."""
    base = rows[1]
    return [{"model": r["model"], "warp": _ratio(r["warp_error"], base["warp_error"]),
             "flips": _ratio(r["flip_rate"], base["flip_rate"]), "psnr": r["psnr"] - base["psnr"],
             "key": r["key_colour_kept"]} for r in rows[2:] if "frame by frame" not in r["model"]]


def mean_rows(tables: list[list[dict]]) -> list[dict]:
    """Each row's metrics averaged over the triples' tables (same models in the same order)."""
    return [{k: (r0[k] if k == "model" else None if r0[k] is None else sum(t[i][k] for t in tables) / len(tables))
             for k in r0} for i, r0 in enumerate(tables[0])]


def targets(ratios_: list[dict]) -> list[str]:
    """Each temporal row (``ratios``) against the targets: warp error <= 0.5x, flip rate <= 0.2x,
    PSNR within 0.5 dB of the per-frame baseline; key colour kept >= 90% for key-frame propagation."""
    lines = []
    for r in ratios_:
        if "key frame" in r["model"]:
            check, ok = f"key colour kept {100 * r['key']:.1f}% (>= 90%)", r["key"] >= 0.9
        else:
            check = (f"warp {r['warp']:.3f}x (<= 0.5), flips {r['flips']:.3f}x (<= 0.2), "
                     f"PSNR {r['psnr']:+.2f} dB (>= -0.5)")
            ok = r["warp"] <= 0.5 and r["flips"] <= 0.2 and r["psnr"] >= -0.5
        lines.append(f"- {r['model']}: {check}: {'PASS' if ok else 'FAIL'}")
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
    p.add_argument("checkpoints", nargs="+", help="FRAME STACK PROPAGATE checkpoints, one triple per seed")
    p.add_argument("--clips", type=int, default=128)
    p.add_argument("--strip-clip", type=int, default=3)
    p.add_argument("--out", default="docs/results/video")
    a = p.parse_args()
    if len(a.checkpoints) % 3:
        p.error(f"give checkpoints in triples FRAME STACK PROPAGATE (one per training seed); got {len(a.checkpoints)}")
    if not 0 <= a.strip_clip < a.clips:
        p.error(f"--strip-clip must be a clip index in [0, {a.clips}); got {a.strip_clip}")
    torch.manual_seed(0)
    triples = [a.checkpoints[i:i + 3] for i in range(0, len(a.checkpoints), 3)]
    items, tables, lines, labels, strip_models = None, [], [], [], None
    for n, triple in enumerate(triples):
        models = [load_colorizer(c) for c in triple]
        if items is None:
            size = int(models[0].config["data"]["size"])
            data = SyntheticVideo(size, a.clips, 0, "val", 8)
            items = [data[i] for i in range(a.clips)]
            strip_models = models
        rows = [truth_row(items)]
        for name, model in zip(("video_frame", "video_stack", "video_propagate"), models, strict=True):
            rows += model_rows(model, name, items)
        tables.append(rows)
        seeds = {(m.config or {}).get("seed") for m in models}
        labels.append(f"seed {seeds.pop()}" if len(seeds) == 1 else f"triple {n + 1}")
        block = [f"### {labels[-1]}: {a.clips} held-out clips", "",
                 *markdown_table(rows), "", *targets(ratios(rows)), ""]
        lines += block
        print("\n".join(block), flush=True)
    if len(tables) > 1:
        per_seed = [ratios(t) for t in tables]
        head = "| target | " + " | ".join(labels) + " | mean of the metrics |"
        summary = [f"### All {len(tables)} triples ({', '.join(labels)})", "", head, "|---" * (len(tables) + 2) + "|"]
        for i, r in enumerate(ratios(mean_rows(tables))):
            cells = [fmt(s[i]) for s in per_seed] + [fmt(r)]
            summary.append(f"| {r['model']} | " + " | ".join(cells) + " |")
        summary += ["", *targets(ratios(mean_rows(tables)))]
        lines += summary
        print("\n".join(summary))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    strip(*strip_models, items[a.strip_clip]).save(out / "strip.png")
    print(f"wrote {out / 'table.md'}, {out / 'strip.png'}")


def fmt(r: dict) -> str:
    if "key frame" in r["model"]:
        return f"{100 * r['key']:.1f}% kept"
    return f"{r['warp']:.3f}x / {r['flips']:.3f}x / {r['psnr']:+.2f} dB"


if __name__ == "__main__":
    main()
