"""Sample grids: one row per image, columns gray | prediction | ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from colorlab.color import lab_to_rgb

MIN_TILE = 128  # small crops are upscaled (nearest) so that a grid is readable


def sample_grid(lab_pred: Tensor, lab_true: Tensor, columns: tuple[str, ...] = ("gray", "pred", "true")) -> np.ndarray:
    """Lab (B, 3, H, W) prediction and truth -> uint8 (rows, cols, 3) image of B rows."""
    gray = torch.cat([lab_true[:, :1], torch.zeros_like(lab_true[:, 1:])], dim=1)
    panels = {"gray": gray, "pred": lab_pred, "true": lab_true}
    rgb = torch.stack([lab_to_rgb(panels[c].float()) for c in columns], dim=1)  # (B, C, 3, H, W)
    tiles = rgb.flatten(0, 1).cpu()
    if tiles.shape[-1] < MIN_TILE:
        factor = -(-MIN_TILE // tiles.shape[-1])
        tiles = tiles.repeat_interleave(factor, dim=-1).repeat_interleave(factor, dim=-2)
    grid = make_grid(tiles, nrow=len(columns), padding=2, pad_value=1.0)
    return (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def save_png(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path
