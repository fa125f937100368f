"""The ab prior of a data source, computed on the data side: the training split streamed through the
DataModule's own conversion (on the GPU when there is one), pixels counted per in-gamut ab bin, the counts
cached under ``prior.cache_dir`` keyed by the data and bin settings. ``python -m colorlab.prior`` draws its
figures; ``fit`` computes it when missing and hands it to the model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm import tqdm

from colorlab.bins import bin_counts, gamut_centers
from colorlab.color import AB_NORM, is_gray
from colorlab.config import compute_device
from colorlab.data.datamodule import data_identity, worker_count
from colorlab.io import atomic_save

CACHE_VERSION = 2  # 2: per-image histograms cached too


def prior_key(cfg: DictConfig) -> str:
    spec = {"data": data_identity(cfg), "grid": cfg.prior.grid, "max_images": cfg.prior.max_images,
            "version": CACHE_VERSION}
    digest = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    return f"{cfg.data.name}-{digest}"


def stream_histograms(datamodule, cfg: DictConfig, centers: Tensor) -> tuple[Tensor, int]:
    """Per-image bin counts (N, Q) over the training split of a set-up DataModule (gray images left
    out), and N streamed. The global random state is left as it was: whether the prior is computed
    or read from the cache changes nothing in the run that follows."""
    from torch.utils.data import DataLoader

    from colorlab.data import add_lab
    from colorlab.data.jpeg import decode_batch
    from colorlab.data.synthetic import render_batch

    dataset = datamodule.train_set
    n_images = min(len(dataset), cfg.prior.max_images)
    subset = torch.utils.data.Subset(dataset, range(n_images))
    device = compute_device()
    centers = centers.to(device)
    histograms = []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        loader = DataLoader(subset, batch_size=cfg.data.batch_size, collate_fn=getattr(dataset, "collate", None),
                            # auto: before the Trainer, so each of the node's GPUs may have a rank doing this
                            num_workers=worker_count(cfg.data.num_workers, device.type == "cuda",
                                                     torch.cuda.device_count() if device.type == "cuda" else 1))
        for batch in tqdm(loader, desc="ab prior", unit="batch", disable=None):
            batch, _ = decode_batch(batch, device, getattr(dataset, "paths", None))  # data.decode=gpu: on the device
            images = render_batch({k: batch[k].to(device) for k in ("rgb", "scene", "ground_l") if k in batch})
            ab = add_lab({"rgb": images["rgb"]})["ab"] * AB_NORM  # the DataModule's own conversion
            ab = ab[~is_gray(ab)]  # as in training: gray images carry no colour
            histograms.append(bin_counts(ab, centers).float().cpu())
    return torch.cat(histograms), n_images


def load_or_compute_prior(cfg: DictConfig, datamodule=None) -> dict:
    """{'counts': (Q,) float64, 'histograms': (N, Q) per image, 'centers': (Q, 2), 'images': N,
    'path': cache file} of the training split of ``datamodule`` (set up), or of the DataModule that
    ``cfg.data`` describes when None; cached on disk, keyed by the data settings.

    The cache file is written atomically (temporary file + rename), so a process never reads a
    half-written prior, also when several DDP ranks start at once.
    """
    path = Path(cfg.prior.cache_dir) / f"{prior_key(cfg)}.pt"
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        return {**cached, "path": path}
    if datamodule is None:
        from colorlab.data import ColorDataModule

        datamodule = ColorDataModule(seed=cfg.seed, **OmegaConf.to_container(cfg.data, resolve=True))
        datamodule.setup("fit")
    centers = gamut_centers(cfg.prior.grid)
    histograms, n_images = stream_histograms(datamodule, cfg, centers)
    counts = histograms.double().sum(dim=0)
    if counts.sum() == 0:
        raise ValueError(f"the training split of data={cfg.data.name} has no colour pixels: cannot estimate a prior")
    entry = {"counts": counts, "histograms": histograms, "centers": centers, "images": n_images}
    atomic_save(entry, path)
    return {**entry, "path": path}
