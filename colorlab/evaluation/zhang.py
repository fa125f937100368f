"""Zhang's evaluation layouts, each printed beside the published numbers of the released models:
``python -m colorlab.evaluate ckpt=PATH protocol=zhang16|zhang17 data=folder data.root=DIR``.

- ``zhang16`` (Colorful Image Colorization, ECCV 2016, Table 1): raw and class-rebalanced AuC of the
  cumulative per-pixel ab error over thresholds 0..150, on whole images: each image resized (bicubic, no
  crop) to the network's side ``data.size`` (256 for the imported models, as the release's demo), the
  predicted ab upsampled bilinearly to the image's own size and compared with its ab there.
- ``zhang17`` (Real-Time User-Guided Image Colorization, SIGGRAPH 2017, Figure 6; colorization-pytorch's
  test_sweep.py): images resized to ``data.size`` squared, 0 to 50 random ground-truth hints of 6x6 px
  placed as in training (normal around the centre, the patch's mean ab), PSNR of the 8-bit RGB per image,
  averaged, at the sweep's numbers of points.

The images are the first ``evaluate.protocol_images`` files of ``data.val_root`` or ``data.root`` in name
order (null: the paper's count); ImageNet's validation images give the papers' rows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image
from torch import Tensor

from colorlab.color import AB_NORM, denormalize_lab, lab_to_uint8, normalize_lab, uint8_to_lab
from colorlab.config import ConfigError
from colorlab.hints import HintSampling, sample_hints
from colorlab.io import IMAGE_SUFFIXES, UnreadableImage, read_rgb
from colorlab.metrics import ErrorCurveAuC

PROTOCOLS = ("zhang16", "zhang17")
PAPER_IMAGES = {"zhang16": 10_000, "zhang17": 1_000}
HINT_PATCH = 6  # test_sweep.py: sample_Ps = [6]
MAX_POINTS = 50

# The released SIGGRAPH17 model's curve: the mean over its 1000 images of each column of psnrs_siggraph.npy
ZHANG2017_PSNR = {0: 24.43, 1: 25.37, 2: 26.20, 3: 26.69, 4: 27.08, 5: 27.39, 6: 27.65, 8: 28.10, 10: 28.42,
                  13: 28.79, 16: 29.04, 20: 29.34, 25: 29.60, 32: 29.91, 40: 30.17, 50: 30.42}
ZHANG2017_PSNR_100 = 31.13  # the same file's column for 100 points, past this protocol's 50 (shared/DESIGN.md)
ZHANG2017_SOURCE = ("richzhang/colorization-pytorch, resources/psnrs_siggraph.npy (the released model on 1000 "
                    "ImageNet validation images at 256x256, random 6x6 hints; test_sweep.py plots it beside a "
                    "new run, the paper's Figure 6); standard errors 0.14 dB")
ZHANG2016_SOURCE = ("Zhang et al. 2016, Table 1 (10k ImageNet validation images): its AuC rows are not verified "
                    "here and so not printed; read them in the paper (arXiv 1603.08511). colorlab's auc is the "
                    "151-point mean, 0.002 to 0.003 below the paper's integral for good models (docs/reference.md)")

# (l_norm (1, 1, S, S), hint_ab (1, 2, S, S) | None, hint_mask (1, 1, S, S) | None) -> ab_norm (1, 2, S, S)
Predict = Callable[[Tensor, Tensor | None, Tensor | None], Tensor]


def sweep_points(limit: int = MAX_POINTS) -> list[int]:
    """test_sweep.py's numbers of points, round(10^(-0.1 ... 2.7)) with the first set to 0, up to ``limit``."""
    points = np.round(10 ** np.arange(-0.1, 2.8, 0.1))
    points[0] = 0
    return [int(n) for n in np.unique(points.astype(int)) if n <= limit]


def protocol_images(cfg: DictConfig, protocol: str) -> list[Path]:
    """The first ``evaluate.protocol_images`` image files (the paper's count when null) of the folder."""
    data = cfg.data
    root = data.get("val_root") or data.get("root")
    if data.name != "folder" or root is None or not Path(root).is_dir():
        raise ConfigError(f"protocol={protocol} reads the images of a folder: add data=folder data.root=DIR "
                          "(ImageNet's validation images for the paper's rows)")
    count = cfg.evaluate.get("protocol_images") or PAPER_IMAGES[protocol]
    paths = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:count]
    if not paths:
        raise ConfigError(f"protocol={protocol}: no images under {root}")
    return paths


def resized(rgb: np.ndarray, side: int, resample: Image.Resampling) -> Tensor:
    """uint8 (H, W, 3) -> uint8 (1, 3, side, side), the whole image squeezed (no crop)."""
    small = np.asarray(Image.fromarray(rgb).resize((side, side), resample=resample))
    return torch.from_numpy(small.copy()).permute(2, 0, 1)[None]


@torch.no_grad()
def zhang16_auc(predict: Predict, paths: list[Path], side: int, prior: Tensor | None) -> tuple[dict, Counter]:
    """AuC of whole images, predicted at ``side`` and compared at their own size: ({'auc', 'auc_rebalanced'
    (with a prior), 'auc_per_bin', 'images'}, unreadable files by reason)."""
    metric, skipped, n = ErrorCurveAuC(prior), Counter(), 0
    for path in paths:
        try:
            rgb = read_rgb(path)
        except UnreadableImage as e:
            skipped[e.reason] += 1
            continue
        l_small = normalize_lab(uint8_to_lab(resized(rgb, side, Image.Resampling.BICUBIC)))[0]
        ab = predict(l_small, None, None)  # (1, 2, side, side) normalised
        ab_full = torch.nn.functional.interpolate(ab.float(), size=rgb.shape[:2], mode="bilinear",
                                                  align_corners=False) * AB_NORM
        metric.update(ab_full, uint8_to_lab(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None])[:, 1:])
        n += 1
    return {**{k: float(v) for k, v in metric.compute().items()}, "images": n}, skipped


@torch.no_grad()
def zhang17_sweep(predict: Predict, paths: list[Path], side: int, points: list[int], sampling: HintSampling,
                  seed: int = 0) -> tuple[dict[int, float], Counter]:
    """Mean PSNR (dB, 8-bit RGB, per image) at each number of random 6x6 ground-truth hints, images resized to
    side x side; the hints of image i and count n come from a generator seeded by (seed, i, n)."""
    totals, skipped, n_images = dict.fromkeys(points, 0.0), Counter(), 0
    for i, path in enumerate(paths):
        try:
            rgb = read_rgb(path)
        except UnreadableImage as e:
            skipped[e.reason] += 1
            continue
        l, ab = normalize_lab(uint8_to_lab(resized(rgb, side, Image.Resampling.BILINEAR)))
        truth = lab_to_uint8(denormalize_lab(l, ab)).float()
        for n in points:
            generator = torch.Generator().manual_seed((seed * 100_003 + i) * 1009 + n)
            hint_ab, hint_mask = sample_hints(ab, sampling, generator, n_hints=n, patch=HINT_PATCH)
            pred = lab_to_uint8(denormalize_lab(l, predict(l, hint_ab, hint_mask))).float()
            mse = (pred - truth).pow(2).mean().clamp_min(1e-10)
            totals[n] += float(10 * torch.log10(255.0**2 / mse))
        n_images += 1
    return {n: total / max(n_images, 1) for n, total in totals.items()}, skipped


def model_predictor(model) -> Predict:
    """A colorlab model as a Predict: its decoded ab at the input's size."""
    device = next(model.parameters()).device

    def predict(l: Tensor, hint_ab: Tensor | None, hint_mask: Tensor | None) -> Tensor:
        hint_ab, hint_mask = (None if t is None else t.to(device) for t in (hint_ab, hint_mask))
        return model.predict_ab(model(l.to(device), None, hint_ab, hint_mask), l.shape[-2:]).cpu()

    return predict


def run_protocol(model, cfg: DictConfig, out: Path) -> list[Path]:
    """Measure ``cfg.evaluate.protocol`` and write protocol.json and protocol.md into ``out`` beside the
    published numbers; returns the files written."""
    protocol = cfg.evaluate.protocol
    if protocol not in PROTOCOLS:
        raise ConfigError(f"evaluate.protocol={protocol!r} is not a protocol; valid: {', '.join(PROTOCOLS)}")
    paths, side = protocol_images(cfg, protocol), cfg.data.size
    if protocol == "zhang17" and model.hint_sampling is None:
        raise ConfigError("protocol=zhang17 needs a model that takes hints (siggraph17, hints_unet); this one is "
                          f"{model.config['experiment']}")
    model.eval()
    if protocol == "zhang16":
        prior = model.val_metrics.auc.prior.cpu()
        measured, skipped = zhang16_auc(model_predictor(model), paths, side, prior if prior.any() else None)
        lines = [f"| metric | {model.config['experiment']} |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in measured.items() if k != "images"]
        source, report = ZHANG2016_SOURCE, {"measured": measured}
    else:
        curve, skipped = zhang17_sweep(model_predictor(model), paths, side, sweep_points(), model.hint_sampling,
                                       cfg.evaluate.hint_seed)
        lines = [f"| points | {model.config['experiment']} (dB) | released SIGGRAPH17, published (dB) |",
                 "|---|---|---|"]
        lines += [f"| {n} | {psnr:.2f} | {ZHANG2017_PSNR[n]:.2f} |" for n, psnr in curve.items()]
        measured = {"images": len(paths) - sum(skipped.values()), "psnr": {str(n): v for n, v in curve.items()}}
        source, report = ZHANG2017_SOURCE, {"measured": measured, "published": ZHANG2017_PSNR}
    title = (f"# protocol={protocol}: {len(paths) - sum(skipped.values())} image(s) of {paths[0].parent} at "
             f"{side} px" + (f" ({sum(skipped.values())} unreadable left out)" if skipped else ""))
    out.mkdir(parents=True, exist_ok=True)
    (out / "protocol.md").write_text("\n".join([title, "", *lines, "", f"Published numbers: {source}."]) + "\n")
    (out / "protocol.json").write_text(json.dumps({"protocol": protocol, "side": side, **report,
                                                   "source": source}, indent=2) + "\n")
    return [out / "protocol.md", out / "protocol.json"]
