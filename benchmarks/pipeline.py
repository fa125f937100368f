"""The whole training pipeline in one process: the step alone, the step fed by the DataModule through
Lightning's Trainer.fit, and the data path alone, in images/s.

(a) step: the LightningModule's step on one batch already on the device (Lab conversion, hints, targets,
    loss under the run's autocast, backward, AdamW), as benchmarks/throughput.py steps it; timed before,
    between and after the fits, the best run kept.
(b) fit: ``Trainer.fit`` of warm-up + timed steps, built by colorlab.fit.prepare (the run's DataModule,
    model and callbacks; logger=csv, the progress bar as configured: on), timed from the end of the last
    warm-up step to the end of the last step (no validation, checkpoint or epoch end falls in between), for
    data=synthetic and for data=folder over JPEGs of ImageNet's size (500 x 375 and similar, quality 90)
    written into a temporary folder from scikit-image's bundled photos (random crops and flips, upscaled
    where needed); and once with a source that yields one pre-built device batch again and again: that
    run against (a) is Lightning's and colorlab's hooks' own cost per step, without data.
(c) data: the same DataModule's training batches with no step: DataLoader with the run's workers, the
    transfer hooks (decode failures, Lab, gray check) and the transfer to the device.
Each of (b) and (c) is the best of ``--rounds``: a shared machine only ever slows a run down. For each
source: (b) / (a), and what bounds (b): the data when (c) < (a), else the step and the per-step overhead.
(c) is timed after the prefetch depth of batches and 4 more, so every worker is in its steady state.
A window of (b) starts with the batches the workers made ahead (up to workers x 2, and Lightning's one):
when the data bounds (b), the window uses them up and reads up to steps / (steps - depth) high. So (b)
counts at most the batches the workers made within the window (counted by the training set's collate_fn,
which they run once per batch; the epoch holds the prefetch depth beyond the last step, so they never run
out within it): a fit cannot outrun its workers for long. When the step bounds (b), the
workers make one batch per step and nothing changes.

data=folder runs once per ``--decode``: ``cpu`` (PIL in the workers) and, by default on a GPU, ``gpu``
(data.decode=gpu: the JPEGs decoded as a batch on the device with nvJPEG); the folder's target counts the
better of them, since a user picks one.

Targets: (b) / (a) >= 0.9 for both sources on a GPU, >= 0.65 on a CPU. On a CPU the DataLoader workers
and the step's threads share the same cores, so (b) cannot reach (a): with perfectly shared cores it
reaches at most 1 / (1/(a) + s/(c)), s = min(workers, cores) / cores (1 without workers: the data work
then runs between steps), printed on a CPU. On the 2-core build machine, default case (unet_bins, 64 px,
batch 32, 2 workers) with nothing else running (docs/benchmarks.md, "Pipeline"): (a) 237-250 img/s,
(c) 770-840 img/s for both sources, so a bound of 0.77x (a); one device batch repeated ran at 0.89-0.91x
(a) (13-17 ms of a 130 ms step: Lightning's loop, progress bar, logging, schedule); (b) / (a) measured
0.73-0.75 in two runs (0.71-0.77 in four shorter ones; 0, 1 or 2 workers alike within noise), 0.95-0.98
of the bound. 0.65 is that less a shared machine's noise; a data path half as fast ((c) ~ 400 img/s,
bound 0.63x) fails it.

    python benchmarks/pipeline.py [--device cpu|cuda] [--experiment NAME] [--size PX] [--batch N]
        [--precision 32-true|bf16-mixed] [--steps N] [--warmup N] [--workers N] [--rounds N] [--jpegs N]
        [--decode cpu gpu] [--sources synthetic folder repeated] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.apply_func import move_data_to_device
from PIL import Image
from steps import check_overrides, model_and_optimizer, sync, training_step
from torch.utils.data import default_collate

from colorlab.config import available_experiments, compose
from colorlab.data import ColorDataModule
from colorlab.data.photos import SKIMAGE_PHOTOS
from colorlab.embed import attach_embeddings
from colorlab.fit import prepare

# (b) / (a) at least this, for every data source (see the module docstring for the CPU figure)
TARGET = {"cuda": 0.9, "cpu": 0.65}
SOURCES = ("synthetic", "folder", "repeated")
PRECISIONS = ("32-true", "bf16-mixed")  # 16-mixed would add a GradScaler to (a): not measured here
JPEG_SIZES = ((500, 375), (375, 500), (500, 333))  # ImageNet's common sizes
JPEG_QUALITY = 90
PREFETCH_FACTOR = 2  # torch's DataLoader default, which ColorDataModule keeps
ALONE_STEPS = 20  # (a) per run, at most: nothing is made ahead of it, and it runs once before and after each fit
REWARM_STEPS = 2  # (a)'s warm-up after a fit: its model is built and its kernels chosen in the first run
PRIOR_IMAGES = 64  # images streamed for the ab prior (bins formulations): enough for the step's cost


def defaults(device: str) -> dict:
    """The issue's GPU case (eccv16_full at 256 px, the paper's width, bf16) and, on the CPU, the README job."""
    if device == "cuda":
        return dict(experiment="eccv16_full", size=256, batch=64, precision="bf16-mixed", steps=150, warmup=15,
                    workers=min(16, (os.cpu_count() or 2) - 1), jpegs=256, rounds=1, decode=["cpu", "gpu"])
    return dict(experiment="unet_bins", size=64, batch=32, precision="32-true", steps=50, warmup=3, workers=2,
                jpegs=64, rounds=2, decode=["cpu"])


def prefetch_depth(workers: int) -> int:
    """Batches made ahead of the step: the DataLoader's workers x prefetch_factor (2), and Lightning's one."""
    return workers * PREFETCH_FACTOR + 1 if workers else 0


# --- the case ---------------------------------------------------------------------------------------
def compose_case(args, tmp: str, data: list[str], extra: list[str] = ()):
    """The run config: the experiment at --size/--batch/--precision on --device, with data overrides."""
    trainer = ["trainer=gpu"] if args.device == "cuda" else ["trainer.accelerator=cpu", "trainer.devices=1"]
    overrides = [*trainer, f"trainer.precision={args.precision}", f"data.size={args.size}",
                 f"data.batch_size={args.batch}", f"data.num_workers={args.workers}", f"prior.cache_dir={tmp}/priors",
                 f"prior.max_images={PRIOR_IMAGES}", "logger=csv", "checkpoint.every_n_steps=0",
                 "trainer.num_sanity_val_steps=0", "trainer.limit_val_batches=1", "trainer.enable_model_summary=false",
                 f"trainer.max_steps={args.warmup + args.steps}", *data, *args.set, *extra]
    cfg = compose(args.experiment, overrides)
    if args.device == "cuda" and cfg.choices.get("net") == "eccv16" and args.size >= 256 \
            and not any(o.startswith("net.width=") for o in args.set):
        cfg = compose(args.experiment, overrides + ["net.width=64"])  # the paper's network
    return cfg


def data_warmup(args) -> int:
    """Batches (c) takes before its timing: enough that every worker has filled its prefetch slots once."""
    return max(args.warmup, prefetch_depth(args.workers) + 4)


def steps_per_epoch_data(args) -> list[str]:
    """One epoch holds every step of (b) and every batch of (c), and the batches the workers make ahead of
    the last step, with one to spare: no epoch end (or validation) falls inside the timing, and the workers
    never run out of the epoch's batches within it (which would count as the data failing to keep up)."""
    batches = max(args.warmup, data_warmup(args)) + args.steps + prefetch_depth(args.workers) + 1
    return [f"data.train_size={args.batch * batches}"]


def write_jpegs(root: Path, n: int, seed: int = 0) -> None:
    """n photos of ImageNet's sizes at JPEG quality 90: random crops (and flips) of scikit-image's
    bundled colour photos, resized to 500 x 375 and similar (the smaller photos are upscaled)."""
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = []
    for name in SKIMAGE_PHOTOS:
        photo = getattr(skimage.data, name)()
        photos.append(photo[0] if isinstance(photo, tuple) else photo)  # stereo pairs: left view
    root.mkdir(parents=True)
    for i in range(n):
        photo, (w, h) = photos[i % len(photos)], JPEG_SIZES[i % len(JPEG_SIZES)]
        ph, pw = photo.shape[:2]
        scale = min(pw / w, ph / h) * rng.uniform(0.6, 1.0)  # the largest crop of this aspect, shrunk
        cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
        top, left = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
        crop = photo[top:top + ch, left:left + cw]
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        Image.fromarray(np.ascontiguousarray(crop)).resize((w, h), Image.BICUBIC).save(
            root / f"{i:04d}.jpg", format="JPEG", quality=JPEG_QUALITY)


# --- (a) the step alone -------------------------------------------------------------------------------
def device_batch(cfg, device: str) -> dict:
    """One training batch of the synthetic source as the DataModule collates it (uint8 ``rgb``, ``bimodal``,
    ``index``, ``item``), on the device."""
    datamodule = ColorDataModule(seed=cfg.seed, **cfg.data)
    datamodule.setup("fit")
    items = [datamodule.train_set[i] for i in range(cfg.data.batch_size)]
    return move_data_to_device(default_collate(items), device)


class StepAlone:
    """The model and AdamW of the run, stepped outside Lightning on a batch already on the device."""

    def __init__(self, cfg, device: str):
        from omegaconf import OmegaConf

        cfg = OmegaConf.merge(cfg, {"optim": {"scheduler": "none"}})  # the schedule needs a Trainer
        self.device, self.bf16 = device, cfg.trainer.precision == "bf16-mixed"
        self.model, self.opt = model_and_optimizer(cfg, device)
        torch.backends.cudnn.benchmark = bool(cfg.trainer.benchmark)  # as the Trainer sets it

    def step(self, batch: dict) -> None:
        training_step(self.model, self.opt, batch, self.bf16)

    def images_per_s(self, batch: dict, warmup: int, steps: int) -> float:
        for _ in range(warmup):
            self.step(batch)
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step(batch)
        sync(self.device)
        return steps * batch["rgb"].shape[0] / (time.perf_counter() - start)


# --- (b) the step fed through Trainer.fit --------------------------------------------------------------
class BatchCounter:
    """A training set's collate_fn that counts the batches the DataLoader's workers finish (they run it once
    per batch): one byte appended to a file per batch, which works whatever the workers' start method."""

    def __init__(self, collate, path: Path):
        self.collate, self.path = collate or default_collate, path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")

    def __call__(self, items: list) -> dict:
        batch = self.collate(items)
        with open(self.path, "ab", buffering=0) as log:  # O_APPEND: one atomic write per batch
            log.write(b".")
        return batch

    @property
    def made(self) -> int:
        return self.path.stat().st_size


class StepTimer(pl.Callback):
    """Images trained per second from the end of step ``warmup`` to the end of step ``warmup + steps``;
    the device is synchronised at those two ends only (no sync per step).

    The window starts with the batches the workers made ahead (up to workers x 2, and Lightning's one). When
    the data bounds the fit, the window uses them up and reads high (up to steps / (steps - depth)); a fit
    cannot outrun its workers for long, so ``images_per_s`` counts at most the batches the workers made
    within the window (``counter``, a BatchCounter); ``window_images_per_s`` is the window as timed."""

    def __init__(self, warmup: int, steps: int, device: str, counter: BatchCounter | None = None):
        self.warmup, self.steps, self.device, self.counter = warmup, steps, device, counter
        self.done, self.images, self.start, self.seconds, self.made_in_window = 0, 0, None, None, None

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.done += 1
        if self.done > self.warmup:
            self.images += batch["rgb"].shape[0]  # what was trained on (decode failures leave a batch)
        if self.done == self.warmup:
            sync(self.device)
            self.start = time.perf_counter()
            self.made_in_window = -self.counter.made if self.counter is not None else None
        elif self.done == self.warmup + self.steps:
            sync(self.device)
            self.seconds = time.perf_counter() - self.start
            if self.counter is not None:
                self.made_in_window += self.counter.made

    @property
    def window_images_per_s(self) -> float:
        if self.seconds is None:
            raise RuntimeError(f"the fit ended after {self.done} of {self.warmup + self.steps} steps")
        return self.images / self.seconds

    @property
    def images_per_s(self) -> float:
        if self.counter is None:  # one device batch repeated: nothing is made ahead
            return self.window_images_per_s
        return self.window_images_per_s * min(1.0, self.made_in_window / self.steps)


class RepeatedBatch:
    """A training 'loader' that yields (shallow copies of) one pre-built device batch ``n`` times."""

    def __init__(self, batch: dict, n: int):
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return (dict(self.batch) for _ in range(self.n))  # the hooks add keys to the dict they get


def fit_images_per_s(cfg, run_dir: Path, args, loader=None) -> tuple[float, float, int | None]:
    """Trainer.fit as colorlab.fit builds it; ``loader`` replaces the DataModule's training loader. Returns
    img/s (at most what the workers made in the window), img/s as the window timed it, and the batches the
    workers made in the window (None for ``loader``)."""
    timer = StepTimer(args.warmup, args.steps, args.device)
    datamodule, model, trainer, _ = prepare(cfg, run_dir, [timer])
    if loader is not None:
        datamodule.train_dataloader = lambda: loader
    else:
        datamodule.setup("fit")
        timer.counter = BatchCounter(getattr(datamodule.train_set, "collate", None), run_dir / "batches_made")
        datamodule.train_set.collate = timer.counter  # the training loader's collate_fn
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(model, datamodule=datamodule)
    return timer.images_per_s, timer.window_images_per_s, timer.made_in_window


# --- (c) the data path alone ----------------------------------------------------------------------------
def data_images_per_s(cfg, device: str, warmup: int, steps: int) -> float:
    """Training batches of the run's DataModule through its transfer hooks and onto the device as in training
    (Lab, gray images replaced), with no step: images/s after ``warmup`` batches (worker start-up)."""
    datamodule = ColorDataModule(seed=cfg.seed, **cfg.data)
    datamodule.setup("fit")
    attach_embeddings(datamodule, cfg)
    datamodule.trainer = SimpleNamespace(training=True, world_size=1, global_rank=0, num_devices=1,  # what the
                                         strategy=SimpleNamespace(root_device=torch.device(device),  # hooks read
                                                                  cluster_environment=None))
    loader = datamodule.train_dataloader()
    images, start = 0, None
    for i, batch in enumerate(loader):
        batch = datamodule.on_before_batch_transfer(batch, 0)  # the hooks in Lightning's order
        batch = datamodule.on_after_batch_transfer(move_data_to_device(batch, device), 0)
        if i == warmup - 1:
            sync(device)
            start = time.perf_counter()
        elif i >= warmup:
            images += batch["rgb"].shape[0]
        if i == warmup + steps - 1:
            break
    sync(device)
    seconds = time.perf_counter() - start
    if i < warmup + steps - 1:
        raise RuntimeError(f"the epoch ended after {i + 1} of {warmup + steps} batches")
    del loader  # its persistent workers end with it
    return images / seconds


# --- report ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--experiment", choices=sorted(available_experiments()),
                        help="default: eccv16_full on cuda, unet_bins on the CPU")
    parser.add_argument("--size", type=int, help="crop side in px (default: 256 on cuda, 64 on the CPU)")
    parser.add_argument("--batch", type=int, help="default: 64 on cuda, 32 on the CPU")
    parser.add_argument("--precision", choices=PRECISIONS, help="default: bf16-mixed on cuda, 32-true on the CPU")
    parser.add_argument("--steps", type=int, help="timed steps of (b), batches of (c) (default: 150 on cuda, 50 on "
                                                   "the CPU)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default: 15 on cuda, 3 on the CPU)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: min(16, CPUs - 1) on cuda, "
                                                    "2 on the CPU: the config's default)")
    parser.add_argument("--rounds", type=int, help="rounds of (c) and (b) per source, the best kept (default: 1 on "
                                                   "cuda, 2 on a shared CPU)")
    parser.add_argument("--jpegs", type=int, help="JPEGs written for data=folder (default: 256 on cuda, 64 on the CPU)")
    parser.add_argument("--decode", nargs="+", choices=("cpu", "gpu"),
                        help="data.decode of the folder runs (default: cpu gpu on cuda, cpu on the CPU)")
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES),
                        help="what feeds (b) (default: all): synthetic scenes, the JPEG folder, one device batch "
                             "repeated (Lightning's and the hooks' own cost per step)")
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides, e.g. trainer.enable_progress_bar=false")
    args = parser.parse_args(argv)
    for key, value in defaults(args.device).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if not {"synthetic", "folder"} & set(args.sources):
        parser.error(f"--sources needs synthetic or folder (the target is on data): got {' '.join(args.sources)}")
    if min(args.steps, args.warmup, args.rounds, args.size, args.batch, args.jpegs) < 1 or args.workers < 0:
        parser.error(f"--steps, --warmup, --rounds, --size, --batch and --jpegs must be >= 1, --workers >= 0. Got "
                     f"{args.steps}, {args.warmup}, {args.rounds}, {args.size}, {args.batch}, {args.jpegs}, "
                     f"{args.workers}")
    check_overrides(parser, [args.experiment], args.set)
    return args


def measure(args, tmp: str) -> tuple[list[float], dict, dict]:
    """img/s of every (a) run, and per source of every (c) and (b) run (fits: also the repeated batch)."""
    synthetic = ["data=synthetic", f"data.val_size={args.batch}", *steps_per_epoch_data(args)]
    sources = {"synthetic": synthetic} if "synthetic" in args.sources else {}
    if "folder" in args.sources:
        write_jpegs(Path(tmp) / "jpegs", args.jpegs)
        for decode in args.decode:  # "folder", and "folder-gpu" for data.decode=gpu
            sources["folder" + ("" if decode == "cpu" else f"-{decode}")] = [
                "data=folder", f"data.root={tmp}/jpegs", f"data.decode={decode}", *steps_per_epoch_data(args)]
    if "repeated" in args.sources:
        sources["repeated"] = synthetic  # one synthetic device batch, (a)'s, again and again
    cfg = compose_case(args, tmp, synthetic)
    depth, alone_steps = prefetch_depth(args.workers), min(args.steps, ALONE_STEPS)
    print(f"{args.experiment} (net={cfg.net.name}, width {cfg.net.get('width', '-')}), {args.size} px, batch "
          f"{args.batch}, {args.precision}, {args.workers} workers; (b): {args.steps} timed steps after "
          f"{args.warmup}, (c): {args.steps} batches after {data_warmup(args)}, (a): {alone_steps} steps; "
          f"{args.rounds} round(s); sources {', '.join(sources)}"
          + (f"; data=folder: {args.jpegs} JPEGs of {'/'.join(f'{w}x{h}' for w, h in JPEG_SIZES)}, quality "
             f"{JPEG_QUALITY}" if "folder" in args.sources else ""))
    print(f"prefetch depth {depth} batches: a window of {args.steps} steps could read up to "
          f"{args.steps / max(args.steps - depth, 1):.2f}x high when the data bounds it (it starts with batches made "
          f"before it): (b) counts at most the batches the workers made within it", flush=True)
    batch = device_batch(cfg, args.device)
    alone = StepAlone(cfg, args.device)
    step, data, fit = [alone.images_per_s(batch, args.warmup, alone_steps)], {}, {}
    for round_ in range(args.rounds):
        for source, overrides in sources.items():
            cfg = compose_case(args, tmp, overrides, [f"run_dir={tmp}/run-{source}-{round_}"])
            loader = RepeatedBatch(batch, args.warmup + args.steps) if source == "repeated" else None
            if loader is None:
                data.setdefault(source, []).append(data_images_per_s(cfg, args.device, data_warmup(args), args.steps))
            rate, window, made = fit_images_per_s(cfg, Path(cfg.run_dir), args, loader)
            fit.setdefault(source, []).append(rate)
            step.append(alone.images_per_s(batch, REWARM_STEPS, alone_steps))
            print(f"round {round_ + 1} {source}: (b) {rate:.1f}"
                  + (f" (the window timed {window:.1f}; the workers made {made} batches in its {args.steps} steps)"
                     if made is not None else "")
                  + (f", (c) {data[source][-1]:.1f}" if source in data else "")
                  + f", (a) before and after {step[-2]:.1f}, {step[-1]:.1f} img/s", flush=True)
    return step, data, fit


def report(args, step: list[float], data: dict, fit: dict) -> int:
    # a shared machine only ever slows a run down: each figure is the best of its runs
    a, b, c = max(step), {k: max(v) for k, v in fit.items()}, {k: max(v) for k, v in data.items()}
    print(f"\n(a) step alone, batch on the device: {a:.1f} img/s ({1e3 * args.batch / a:.0f} ms/step), the best of "
          f"{len(step)} runs (before, between and after the fits); (b), (c): the best of {args.rounds} round(s)")
    print(f"{'data':<10} {'(c) data img/s':>15} {'(b) fit img/s':>14} {'(b)/(a)':>8}  bound by")
    for source in data:
        bound = "data ((c) < (a))" if c[source] < a else "step + per-step overhead"
        print(f"{source:<10} {c[source]:15.1f} {b[source]:14.1f} {b[source] / a:7.2f}x  {bound}")
    if args.device == "cpu":
        cores = len(os.sched_getaffinity(0))
        share = min(args.workers, cores) / cores if args.workers else 1.0
        bound = {source: 1 / (1 / a + share / c[source]) for source in data}
        print(f"shared-core bound 1/(1/(a) + s/(c)), s = {share:.2f} ({args.workers} workers, {cores} cores): "
              + ", ".join(f"{source} {bound[source]:.1f} img/s = {bound[source] / a:.2f}x (a), (b) at "
                          f"{b[source] / bound[source]:.2f}x of it" for source in data))
    if "repeated" in b:
        print(f"Lightning + colorlab hooks, one device batch repeated: (b) {b['repeated']:.1f} img/s, "
              f"{b['repeated'] / a:.2f}x (a): {1e3 * args.batch * (1 / b['repeated'] - 1 / a):+.1f} ms per step")
    own = compose(args.experiment)
    if "synthetic" in b and own.data.get("train_size") and own.choices.get("data") == "synthetic":
        images = own.data.train_size * own.trainer.max_epochs
        print(f"{args.experiment}'s own budget ({own.data.train_size} scenes x {own.trainer.max_epochs} epochs) at "
              f"this (b) on synthetic data: {images / b['synthetic']:.1f} s of training steps (at {args.size} px, "
              f"batch {args.batch}; the experiment's own: {own.data.size} px, batch {own.data.batch_size})")
    load = os.getloadavg()
    print(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    target = TARGET[args.device]
    ratios = {source: b[source] / a for source in data}
    folders = [source for source in ratios if source.startswith("folder")]
    if len(folders) > 1:
        best_folder = max(folders, key=ratios.get)
        print(f"data=folder: the better decode is {best_folder} ({ratios[best_folder]:.2f}x)")
        ratios = {source: ratio for source, ratio in ratios.items() if source in ("synthetic", best_folder)}
    worst = min(ratios, key=ratios.get)
    print(f"worst (b)/(a): {ratios[worst]:.2f}x (data={worst}); target on {args.device}: >= {target}x for "
          f"every source")
    ok = ratios[worst] >= target
    print("target: PASS" if ok else f"target: FAIL ((b)/(a) {ratios[worst]:.2f}x < {target}x on {args.device}, "
                                    f"data={worst})")
    return 0 if ok else 1


def main() -> int:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    load = os.getloadavg()
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"{os.cpu_count()} CPUs"
    print(f"device {args.device} ({name}, {torch.get_num_threads()} threads), load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, torch {torch.__version__}, lightning {pl.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        step, data, fit = measure(args, tmp)
    return report(args, step, data, fit)


if __name__ == "__main__":
    sys.exit(main())
