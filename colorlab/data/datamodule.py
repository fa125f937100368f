"""One LightningDataModule for every formulation.

CPU workers return uint8 RGB; ``on_after_batch_transfer`` turns it into normalised Lab on the
training device (GPU when there is one), in fp32, and replaces grayscale images in training.

The batch a model receives (after ``on_after_batch_transfer``; B images of H x W):

| key | shape, type | when |
|---|---|---|
| ``rgb`` | (B, 3, H, W) uint8 | always: the crop as decoded, or the scene painted (``data.render``) |
| ``l``, ``ab`` | (B, 1, H, W) in [-0.5, 0.5]; (B, 2, H, W) in ~[-1, 1], fp32 | always (``colorlab.color``) |
| ``index``, ``item`` | (B,) int | always: the dataset index; the source image (per-image caches) |
| ``bimodal`` | (B, 1, H, W) bool | synthetic sources: the bimodal diamond's pixels |
| ``label`` | (B,) int | ``data=folder data.labels=true``: the class folder |
| ``embedding`` | (B, dim) fp32 | ``embed.enabled``: the cached global features of the whole image |
| ``has_colour`` | () fp32, 1 or 0 | training: 0 when every image of the batch was gray (``replace_gray``) |
| ``hint_ab``, ``hint_mask`` | (B, 2, H, W), (B, 1, H, W) | hint models in training (drawn by the model) |
| ``l_stack`` | (B, n, H, W) | ``data.stack`` > 1: L of the frames centred on this one |
| ``previous_ab``, ``previous_valid`` | (B, 2, H, W), (B, 1, H, W) bool | ``data.previous``: t-1's ab carried to t |
| ``previous_flow`` | (B, 2, H, W) px | ``data.previous``: flow from frame t to t-1 |
| ``l_previous``, ``ab_previous``, ``l_stack_previous`` | as ``l``, ``ab``, ``l_stack`` | ``data.previous``: t-1 |

Training replaces each gray image by a copy of a colour image of its batch (``replace_gray``; counted), and
pops and counts ``decode_failed``. Commands that read a checkpoint's
held-out data get these batches from ``validation_data`` and ``DeviceBatches``.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler

from colorlab.color import AB_NORM, is_gray, normalize_lab, uint8_to_lab
from colorlab.data.jpeg import decode_batch
from colorlab.data.photos import folder_splits, samples_splits
from colorlab.data.synthetic import render_batch, synthetic_splits


# data.name -> function(**source keys of the data config) -> (train dataset, val dataset)
def _shards_splits(**kwargs):
    from colorlab.data.shards import shards_splits  # litdata is imported only for data=shards

    return shards_splits(**kwargs)


def _synthetic_video_splits(**kwargs):
    from colorlab.data.video_synthetic import synthetic_video_splits  # frames of clips with exact flow

    return synthetic_video_splits(**kwargs)


def _video_folder_splits(**kwargs):
    from colorlab.data.video_folder import video_folder_splits  # windows of a user's own clips (PyAV)

    return video_folder_splits(**kwargs)


SOURCES = {"synthetic": synthetic_splits, "samples": samples_splits, "folder": folder_splits,
           "shards": _shards_splits, "synthetic_video": _synthetic_video_splits,
           "video_folder": _video_folder_splits}


# data keys that change how fast the splits are read, not what they contain (left out of data_identity).
# render, decode: where scenes are painted (the same scenes) and JPEGs decoded (the same crops, resampled alike
# within a level or two): a prior or embedding table made one way serves the other
_SPEED_KEYS = {"batch_size", "num_workers", "render", "decode"}


def skip_summary(datamodule: ColorDataModule) -> dict:
    """How many training inputs were left out and why: for metrics.json and the closing line."""
    skipped = dict(getattr(datamodule.train_set, "skipped", {}))
    if datamodule.decode_failures:
        skipped["corrupt image data"] = skipped.get("corrupt image data", 0) + len(datamodule.decode_failures)
    if gray := datamodule.gray_replaced:
        skipped["gray images replaced in training"] = gray
    return skipped


def worker_count(setting, on_gpu: bool, local_processes: int = 1, cores_per_process: int | None = None) -> int:
    """DataLoader workers for ``data.num_workers``: a number >= 0, or ``auto``. Auto: 2 when training runs on
    the CPU (the step's threads use every core; docs/benchmarks.md, "Pipeline"); with a GPU, this process's
    share of the cores less one for itself, at most 16 (the one H200 measurement on record fed eccv16 with 14
    workers on 16 cores). The share: ``cores_per_process`` when a launcher gave each process its own cores
    (srun: SLURM_CPUS_PER_TASK), else the cores this process may use over the ``local_processes`` training
    processes of this node that share them."""
    if setting == "auto":
        if not on_gpu:
            return 2
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        share = min(cores, cores_per_process) if cores_per_process else cores // max(local_processes, 1)
        return max(0, min(16, share - 1))
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise ValueError(f"data.num_workers must be a number of worker processes >= 0, or auto. Got {setting!r}")
    return setting


def trainer_workers(setting, trainer) -> int:
    """worker_count for the processes of ``trainer``: srun-launched DDP tasks have SLURM_CPUS_PER_TASK cores
    each; processes Lightning or torchrun start on one node share the node's (the trainer's devices)."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    environment = getattr(trainer.strategy, "cluster_environment", None)
    per_task = None
    if isinstance(environment, SLURMEnvironment) and environment.creates_processes_externally:
        per_task = int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or None
    return worker_count(setting, trainer.strategy.root_device.type == "cuda", trainer.num_devices, per_task)


def data_identity(cfg) -> dict:
    """What identifies a run's data for on-disk caches (priors, embeddings): the data config
    without speed settings, the seed, and for folders a fingerprint of the files."""
    from omegaconf import OmegaConf

    data = {k: v for k, v in OmegaConf.to_container(cfg.data, resolve=True).items() if k not in _SPEED_KEYS}
    if data.get("name") in ("folder", "video_folder"):
        data["files"] = _folder_fingerprint(data.get("root")) + _folder_fingerprint(data.get("val_root"))
    return {**data, "seed": cfg.seed}


def _folder_fingerprint(root: str | None) -> str:
    if root is None or not Path(root).is_dir():
        return ""
    stats = sorted((str(p), p.stat().st_size, int(p.stat().st_mtime)) for p in Path(root).rglob("*") if p.is_file())
    return hashlib.sha1(json.dumps(stats).encode()).hexdigest()[:16]


def _stack_l(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, n, 3, H, W) -> normalised L (B, n, H, W)."""
    b, n = frames.shape[:2]
    return normalize_lab(uint8_to_lab(frames.flatten(0, 1)))[0].reshape(b, n, *frames.shape[-2:])


def add_lab(batch: dict) -> dict:
    """Add ``l`` (B, 1, H, W) in [-0.5, 0.5] and ``ab`` (B, 2, H, W) in ~[-1, 1], fp32, computed on
    the device of ``batch['rgb']`` (uint8 (B, 3, H, W)); video items' extra frames likewise."""
    batch["l"], batch["ab"] = normalize_lab(uint8_to_lab(batch["rgb"]))
    if "context" in batch:  # data.stack > 1: L of the frames centred on each (B, n, H, W)
        batch["l_stack"] = _stack_l(batch["context"])
    if "previous" in batch:  # data.previous: frame t-1's ab carried along the flow (B, 2, H, W)
        batch["previous_ab"] = normalize_lab(uint8_to_lab(batch.pop("previous")))[1] * batch["previous_valid"]
    if "previous_frame" in batch:  # frame t-1's L and ab (B, 1 | 2, H, W): the temporal loss, hints.carry_self
        batch["l_previous"], batch["ab_previous"] = normalize_lab(uint8_to_lab(batch.pop("previous_frame")))
    if "previous_context" in batch:
        batch["l_stack_previous"] = _stack_l(batch.pop("previous_context"))
    return batch


class EpochShuffle(DistributedSampler):
    """This process's share of a random permutation of the training set, drawn from (seed, epoch) alone;
    Lightning calls set_epoch. One process: ``randperm`` seeded by (seed, epoch). Several (DDP):
    DistributedSampler's own order, the one Lightning would substitute, which it leaves in place because this
    is a DistributedSampler. ``resume_at(epoch, n)`` makes the next pass over that epoch skip its first n
    indices, which were trained on before a checkpoint (indices only: nothing is decoded). Datasets with
    ``epoch_draws`` (photos) get (index, epoch) pairs, so their random crops do not depend on the workers."""

    def __init__(self, dataset, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, n_drawn: int) -> None:
        self._resume = (epoch, n_drawn)

    def __iter__(self):
        if self.num_replicas == 1:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(len(self.dataset), generator=generator).tolist()
        else:
            order = list(super().__iter__())
        resume, self._resume = self._resume, None
        order = order[resume[1]:] if resume and resume[0] == self.epoch else order
        if getattr(self.dataset, "epoch_draws", False):  # photos: random crops drawn from (seed, epoch, index)
            return iter([(index, self.epoch) for index in order])
        return iter(order)


class ResumableLoader(DataLoader):
    """The training DataLoader, resumable mid-epoch: Lightning saves its ``state_dict`` (the epoch and how
    many batches of it were drawn) in every checkpoint and gives it back on resume, and the resumed pass
    over that epoch starts at the next batch instead of the epoch's first one."""

    drawn = 0  # batches drawn in the current pass (set per pass; the class value keeps __setattr__ simple)
    _resume: dict | None = None

    def state_dict(self) -> dict:
        return {"epoch": self.sampler.epoch, "batches": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        self._resume = state

    @property
    def resume_pending(self) -> bool:
        return self._resume is not None

    def __iter__(self):
        if self._resume is None:  # an ordinary pass: the iterator (and its seed draw) is made now, as before
            self.drawn = 0
            return self._count(super().__iter__())
        return self._resumed()

    def _resumed(self):
        """A generator, so nothing happens until the first batch is asked for, when Lightning has set the
        sampler's epoch: a checkpoint written at the end of an epoch skips nothing of the next one."""
        state, self._resume = self._resume, None
        self.sampler.resume_at(state["epoch"], state["batches"] * self.batch_size)
        self.drawn = state["batches"] if state["epoch"] == self.sampler.epoch else 0
        yield from self._count(super().__iter__())

    def _count(self, batches):
        for batch in batches:
            self.drawn += 1
            yield batch


class ColorDataModule(pl.LightningDataModule):
    """Batches are dicts: ``rgb`` uint8 (B, 3, H, W), ``index`` and ``item`` (B,), optionally
    ``bimodal`` bool (B, 1, H, W); after transfer also ``l`` (B, 1, H, W) in [-0.5, 0.5] and ``ab``
    (B, 2, H, W) in ~[-1, 1] (see colorlab.color), and ``embedding`` (B, dim) when tables are set."""

    def __init__(self, name: str, size: int, batch_size: int, num_workers: int, seed: int, **source):
        super().__init__()
        if name not in SOURCES:
            raise ValueError(f"data.name={name!r} is not a data source; valid: {sorted(SOURCES)}")
        worker_count(num_workers, on_gpu=False)  # a bad value fails here, before any data is read
        self.name, self.size, self.batch_size, self.num_workers = name, size, batch_size, num_workers
        self.seed, self.source = seed, source
        self.train_set = self.val_set = None
        self.gray_count = torch.zeros((), dtype=torch.long)  # gray training images, summed on the device
        self.decode_failures: set[int] = set()  # training files that failed to decode (by index)
        # optional per-split tables (n_items, dim) of global embeddings, looked up by item id
        self.embeddings: dict[str, torch.Tensor] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set, self.val_set = SOURCES[self.name](size=self.size, seed=self.seed, **self.source)

    def _loader(self, dataset, train: bool) -> DataLoader:
        if self.trainer is not None:  # data.num_workers=auto: sized from where training runs
            workers = trainer_workers(self.num_workers, self.trainer)
        else:  # commands reading held-out data run on the GPU when there is one (compute_device)
            workers = worker_count(self.num_workers, torch.cuda.is_available())
        if isinstance(dataset, torch.utils.data.IterableDataset):  # litdata shards: shard-aware, resumable
            from litdata import StreamingDataLoader

            return StreamingDataLoader(dataset, batch_size=self.batch_size, num_workers=workers, drop_last=train)
        options = dict(batch_size=self.batch_size, drop_last=train, num_workers=workers,
                       persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                       collate_fn=getattr(dataset, "collate", None))  # data.decode=gpu: JPEG bytes as a list
        if not train:  # Lightning gives validation its DistributedSampler under DDP
            return DataLoader(dataset, shuffle=False, **options)
        # an order that depends on (seed, epoch) alone, so a resumed run replays it, from where it stopped
        replicas, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        return ResumableLoader(dataset, sampler=EpochShuffle(dataset, self.seed, replicas, rank), **options)

    def train_dataloader(self) -> DataLoader:
        if getattr(self.train_set, "render", None) == "auto":  # synthetic scenes: painted where training runs
            self.train_set.on_device = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        if getattr(self.train_set, "decode", None) == "gpu" and self.trainer is not None \
                and self.trainer.strategy.root_device.type != "cuda":
            warnings.warn("data.decode=gpu without a CUDA device: JPEGs are decoded by torchvision's CPU decoder "
                          "in the training process, not in the workers; data.decode=cpu is faster here", stacklevel=2)
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def on_before_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        """What needs only the host's data is done before the transfer: read on the device, the decode
        failures and the embedding lookup's items would make the host wait for the device every step.
        data.decode=gpu: the JPEGs are decoded here, onto the training device (nvJPEG reads host memory)."""
        strategy = getattr(self.trainer, "strategy", None)
        return self._on_host(batch, strategy.root_device if strategy is not None else "cpu")

    def _on_host(self, batch: dict, device: torch.device | str) -> dict:
        """Decode JPEG bytes on ``device`` (data.decode=gpu), count decode failures (training) and look up
        the global embeddings (B, dim) by ``item``."""
        training = self.trainer is not None and self.trainer.training
        dataset = self.train_set if training else self.val_set
        batch, undecodable = decode_batch(batch, device, getattr(dataset, "paths", None))
        failed = batch.pop("decode_failed", None)
        if training and failed is not None:
            self.decode_failures.update(int(i) for i in failed[failed >= 0])
            self.decode_failures.update(undecodable)
        table = self.embeddings.get("train" if training else "val")
        if table is not None and "embedding" not in batch:
            batch["embedding"] = table[batch["item"].cpu()]
        return batch

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict:
        # _on_host again: a no-op after on_before_batch_transfer or DeviceBatches, for callers that skip them
        batch = self._on_host(add_lab(render_batch(batch)), batch["rgb"].device)
        training = self.trainer is not None and self.trainer.training
        if "embedding" in batch:
            batch["embedding"] = batch["embedding"].to(batch["rgb"].device, non_blocking=True)
        if training:
            gray = is_gray(batch["ab"] * AB_NORM)
            self.gray_count = self.gray_count.to(gray.device) + gray.sum()
            batch = replace_gray(batch, gray)
        return batch

    @property
    def gray_replaced(self) -> int:
        """Gray training images replaced so far (read on the host: for the run's summary, not per step)."""
        return int(self.gray_count)


def replace_gray(batch: dict, gray: torch.Tensor) -> dict:
    """The training batch with each gray image (``gray`` (B,) bool) replaced by a copy of the nearest colour
    image before it, or the first one after it: gray images carry no colour to learn. Shapes stay (B, ...),
    so nothing is read on the host (dropping them did, every step; Caffe's NonGrayMaskLayer masks them out
    of the loss instead). A batch with no colour image is kept and gets ``has_colour`` 0, which zeroes its
    loss (float (); 1 otherwise)."""
    if len(gray) == 0:  # every file of the batch failed to decode (data.decode=gpu): nothing to replace
        return {**batch, "has_colour": gray.new_zeros((), dtype=torch.float32)}
    position = torch.arange(len(gray), device=gray.device)
    colour = ~gray
    any_colour = colour.any()
    before = torch.where(colour, position, -1).cummax(0).values  # the last colour image at or before each
    source = torch.where(before >= 0, before, colour.int().argmax())  # leading gray ones: the first colour one
    source = torch.where(any_colour, source, position)
    return {**{key: value[source] for key, value in batch.items()}, "has_colour": any_colour.float()}


def validation_data(cfg, num_workers: int | None = None) -> ColorDataModule:
    """The validation split that ``cfg`` (a run's or checkpoint's config) describes, set up, with the
    global embedding tables attached when ``cfg.embed.enabled``: what every command that reads a
    checkpoint's held-out data starts from (evaluate, compare, study create)."""
    from omegaconf import OmegaConf

    from colorlab.embed import attach_embeddings

    data = OmegaConf.to_container(cfg.data, resolve=True)
    if num_workers is not None:
        data["num_workers"] = num_workers
    datamodule = ColorDataModule(seed=cfg.seed, **data)
    datamodule.setup("validate")
    attach_embeddings(datamodule, cfg)
    return datamodule


def embeddings_for(datamodule: ColorDataModule, cfg) -> ColorDataModule:
    """The same data for another checkpoint (compare, study create): its own embedding tables, or none."""
    from colorlab.embed import attach_embeddings

    datamodule.embeddings.clear()
    attach_embeddings(datamodule, cfg)
    return datamodule


class DeviceBatches:
    """Validation batches on ``device`` as a model receives them: the batch schema of
    ``ColorDataModule`` after ``on_after_batch_transfer`` (``l``, ``ab``, and ``embedding``, the
    video keys, ``bimodal`` where the source has them). Sized, for progress bars."""

    def __init__(self, datamodule: ColorDataModule, device: torch.device | str):
        self.datamodule, self.device, self.loader = datamodule, device, datamodule.val_dataloader()

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            batch = self.datamodule._on_host(batch, self.device)  # as on_before_batch_transfer, onto this device
            yield self.datamodule.on_after_batch_transfer({k: v.to(self.device) for k, v in batch.items()}, 0)
