"""Suggested colours by K-means (seed 003 over the whole prediction; ideepcolor at a point).

- ``palette_at_point``: K-means over samples of the model's predicted ab distribution at one
  pixel (bins formulations, or regression with ``model.bins_head``), each sample drawn from a bin
  and jittered uniformly within it; the colours take the photo's lightness at the point.
- ``image_palette``: K-means over the Lab values of the colourised image's pixels (seed 003's
  "top five most dominant colours in the output picture").
Each colour comes with its share of the samples; palettes are sorted by share.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from colorlab.color import lab_to_uint8


def kmeans(x: Tensor, k: int, iterations: int = 50, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means with k-means++ initialisation: x (N, D) -> (centroids (k, D), labels (N,))."""
    if not 1 <= k <= len(x):
        raise ValueError(f"k must be in [1, {len(x)}] (the number of points to cluster). Got {k}")
    gen = torch.Generator().manual_seed(seed)
    centroids = x[torch.randint(len(x), (1,), generator=gen)]
    for _ in range(k - 1):
        d2 = torch.cdist(x, centroids).pow(2).min(dim=1).values
        centroids = torch.cat([centroids, x[torch.multinomial(d2 + 1e-12, 1, generator=gen)]])
    for _ in range(iterations):
        labels = torch.cdist(x, centroids).argmin(dim=1)
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        sizes = torch.bincount(labels, minlength=k)[:, None]
        new = torch.where(sizes > 0, sums / sizes.clamp_min(1), centroids)  # an empty cluster keeps its centroid
        if torch.allclose(new, centroids):
            break
        centroids = new
    return centroids, labels



def _entries(lab: Tensor, labels: Tensor, k: int) -> list[dict]:
    """Centroids in Lab (k, 3) and sample labels -> [{hex, rgb, lab, share}] sorted by share."""
    shares = torch.bincount(labels, minlength=k).double() / len(labels)
    rgb = lab_to_uint8(lab.float()[:, :, None, None])[:, :, 0, 0]  # (k, 3) uint8
    rows = [{"hex": "#" + "".join(f"{int(v):02x}" for v in c), "rgb": [int(v) for v in c],
             "lab": [round(float(v), 2) for v in centroid], "share": round(float(s), 4)}
            for c, centroid, s in zip(rgb, lab, shares, strict=True)]
    return sorted((r for r in rows if r["share"] > 0), key=lambda r: -r["share"])


def palette_at_point(probs: Tensor, centers: Tensor, lightness: float, k: int = 5, n_samples: int = 1024,
                     grid: float = 10.0, seed: int = 0) -> list[dict]:
    """probs (Q,) over bin centres (Q, 2) in Lab units at one pixel with lightness L in [0, 100]."""
    gen = torch.Generator().manual_seed(seed)
    probs, centers = probs.detach().double().cpu(), centers.detach().float().cpu()
    bins = torch.multinomial(probs / probs.sum(), n_samples, replacement=True, generator=gen)
    ab = centers[bins] + (torch.rand(n_samples, 2, generator=gen) - 0.5) * grid  # uniform within the bin
    centroids, labels = kmeans(ab, min(k, n_samples), seed=seed)
    lab = torch.cat([torch.full((len(centroids), 1), float(lightness)), centroids], dim=1)
    return _entries(lab, labels, len(centroids))


@functools.lru_cache(maxsize=32)
def _pick(n_pixels: int, max_pixels: int, seed: int) -> Tensor:
    return torch.randperm(n_pixels, generator=torch.Generator().manual_seed(seed))[:max_pixels]


def palette_pixels(lab: Tensor, max_pixels: int = 20000, seed: int = 0) -> Tensor:
    """The pixels image_palette clusters: lab (3, H, W) -> (N, 3) Lab, all of them or ``max_pixels``
    drawn at random (the same for every image of that size: keep them instead of the image)."""
    pixels = lab.detach().float().cpu().flatten(1).T  # (H*W, 3)
    return pixels[_pick(len(pixels), max_pixels, seed)] if len(pixels) > max_pixels else pixels


def image_palette(lab: Tensor, k: int = 5, max_pixels: int = 20000, seed: int = 0) -> list[dict]:
    """lab (3, H, W) of the colourised image -> its k dominant colours (K-means in Lab)."""
    return pixels_palette(palette_pixels(lab, max_pixels, seed), k, seed)


def pixels_palette(pixels: Tensor, k: int = 5, seed: int = 0) -> list[dict]:
    """Lab pixels (N, 3) from ``palette_pixels`` -> their k dominant colours."""
    centroids, labels = kmeans(pixels, min(k, len(pixels)), seed=seed)
    return _entries(centroids, labels, len(centroids))


def swatch(palette: list[dict], tile: int = 72) -> np.ndarray:
    """One square per colour, its hex code and share below: uint8 (tile + 28, tile * K, 3)."""
    image = Image.new("RGB", (tile * len(palette), tile + 28), "white")
    draw = ImageDraw.Draw(image)
    for i, colour in enumerate(palette):
        draw.rectangle([i * tile, 0, (i + 1) * tile - 1, tile - 1], fill=tuple(colour["rgb"]))
        draw.text((i * tile + 4, tile + 2), colour["hex"], fill="black")
        draw.text((i * tile + 4, tile + 14), f"{colour['share']:.0%}", fill="gray")
    return np.asarray(image)


def write_palettes(palettes: dict[str, list[dict]], png: Path, json_path: Path, extra: dict | None = None) -> None:
    """Swatch rows (one per palette, labelled) into ``png`` and the palettes into ``json_path``."""
    rows = []
    for name, palette in palettes.items():
        label = Image.new("RGB", (150, 100), "white")
        ImageDraw.Draw(label).text((6, 40), name, fill="black")
        row = swatch(palette)
        rows.append(np.concatenate([np.asarray(label)[: row.shape[0]], row], axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    Image.fromarray(np.concatenate(rows)).save(png)
    json_path.write_text(json.dumps({**(extra or {}), **palettes}, indent=2) + "\n")
