"""Image grids: one row per image, one labelled column per panel (gray | prediction | ground truth, or
one column per checkpoint or temperature), so that a grid read alone says what it shows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from colorlab.color import lab_to_rgb

MIN_TILE = 128  # small crops are upscaled (nearest) so that a grid is readable
LABEL_HEIGHT = 18  # px of the header row that names the columns (one line; more lines add LINE_HEIGHT each)
LINE_HEIGHT = 12
PADDING = 2


def labelled_grid(columns: list[tuple[str, Tensor]], tile: int = MIN_TILE) -> np.ndarray:
    """columns: (label, Lab (B, 3, H, W)) -> uint8 (rows, cols, 3) image, one row per image, the label
    above each column; every image is shown as a ``tile`` x ``tile`` square (nearest resampling)."""
    rows = columns[0][1].shape[0]
    step = tile + PADDING
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    labels = [wrap(label, tile - 8, draw) for label, _ in columns]  # long labels (compare's) take more lines
    header = LABEL_HEIGHT + LINE_HEIGHT * (max(len(lines) for lines in labels) - 1)
    canvas = Image.new("RGB", (len(columns) * step, header + rows * step), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (lines, (_, lab)) in enumerate(zip(labels, columns, strict=True)):
        for i, line in enumerate(lines):
            draw.text((c * step + 4, 3 + i * LINE_HEIGHT), line, fill="black")
        rgb = (lab_to_rgb(lab.float()).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        for r in range(rows):
            image = Image.fromarray(rgb[r]).resize((tile, tile), Image.NEAREST)
            canvas.paste(image, (c * step, header + r * step))
    return np.asarray(canvas)


def wrap(text: str, width: int, draw: ImageDraw.ImageDraw) -> list[str]:
    """``text`` in lines of at most ``width`` px in ``draw``'s font, broken after spaces (inside a word
    that is wider than a line, anywhere)."""
    lines = [""]
    for word in text.split(" "):
        candidate = f"{lines[-1]} {word}" if lines[-1] else word
        if draw.textlength(candidate) <= width:
            lines[-1] = candidate
            continue
        lines.append("")
        for char in word:
            if lines[-1] and draw.textlength(lines[-1] + char) > width:
                lines.append("")
            lines[-1] += char
    return [line for line in lines if line] or [""]


def sample_grid(lab_pred: Tensor, lab_true: Tensor) -> np.ndarray:
    """Lab (B, 3, H, W) prediction and truth -> uint8 image of B rows: gray | prediction | ground truth."""
    gray = torch.cat([lab_true[:, :1], torch.zeros_like(lab_true[:, 1:])], dim=1)
    tile = max(MIN_TILE, lab_true.shape[-1])
    return labelled_grid([("gray", gray), ("prediction", lab_pred), ("ground truth", lab_true)], tile)


def save_png(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
