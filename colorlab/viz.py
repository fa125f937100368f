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
LABEL_HEIGHT = 18  # px of the header row that names the columns
PADDING = 2


def labelled_grid(columns: list[tuple[str, Tensor]], tile: int = MIN_TILE) -> np.ndarray:
    """columns: (label, Lab (B, 3, H, W)) -> uint8 (rows, cols, 3) image, one row per image, the label
    above each column; every image is shown as a ``tile`` x ``tile`` square (nearest resampling)."""
    rows = columns[0][1].shape[0]
    step = tile + PADDING
    canvas = Image.new("RGB", (len(columns) * step, LABEL_HEIGHT + rows * step), "white")
    draw = ImageDraw.Draw(canvas)
    for c, (label, lab) in enumerate(columns):
        draw.text((c * step + 4, 3), label, fill="black")
        rgb = (lab_to_rgb(lab.float()).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        for r in range(rows):
            image = Image.fromarray(rgb[r]).resize((tile, tile), Image.NEAREST)
            canvas.paste(image, (c * step, LABEL_HEIGHT + r * step))
    return np.asarray(canvas)


def sample_grid(lab_pred: Tensor, lab_true: Tensor) -> np.ndarray:
    """Lab (B, 3, H, W) prediction and truth -> uint8 image of B rows: gray | prediction | ground truth."""
    gray = torch.cat([lab_true[:, :1], torch.zeros_like(lab_true[:, 1:])], dim=1)
    tile = max(MIN_TILE, lab_true.shape[-1])
    return labelled_grid([("gray", gray), ("prediction", lab_pred), ("ground truth", lab_true)], tile)


def save_png(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
