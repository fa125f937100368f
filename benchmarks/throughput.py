"""Training throughput against the device's limit, in one process.

For each experiment at its own crop size and at 256 px (eccv16 nets at net.width=64 there): the full
LightningModule training step (Lab conversion, hint sampling, targets, loss, backward, AdamW step) in
images/s, its FLOPs (torch.utils.flop_counter, forward + backward), and the achieved FLOP/s as a
fraction of a dense matmul peak measured in this process at the same precision (MFU). The anchor, in
the same run: colorization-pytorch's user-hint data step (its rgb2lab and the per-image Python loop of
util.get_colorization_data / add_color_points, transcribed in behaviour) around the same network,
loss and optimizer as hints_unet; hints_unet's step throughput is reported as a ratio to it.
Fusion nets (koala_mse, fusion_bins112) get a random global embedding per image: in training it is
read from the embedding cache (colorlab/embed.py), not computed in the step.
Target: hints_unet >= 0.9x the anchor on the CPU (not slower beyond noise), >= 3x on a GPU.

    python benchmarks/throughput.py [--device cpu|cuda] [--experiment NAME ...] [--size PX] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
from steps import check_overrides, model_and_optimizer, sync, training_step
from torch.utils.flop_counter import FlopCounterMode

from colorlab.config import available_experiments, compose
from colorlab.data.datamodule import add_lab
from colorlab.data.synthetic import SyntheticScenes

DEFAULT_EXPERIMENTS = ("hints_unet",)
# On the CPU the network dominates both steps, so the anchor's Python loop is mostly hidden: the CPU
# target is only "not slower beyond timing noise"; the 3x is a GPU target.
TARGET = {"cpu": 0.9, "cuda": 3.0}


def matmul_peak(device: str, dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """Dense matmul FLOP/s (n x n x n, the best of reps) at this precision on this device."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


# --- the anchor: colorization-pytorch's data step, behaviour transcribed --------------------------
def anchor_rgb2lab(rgb: torch.Tensor) -> torch.Tensor:
    """float RGB in [0, 1] (N, 3, H, W) -> Lab, elementwise with float masks, as util.rgb2xyz/xyz2lab."""
    mask = (rgb > 0.04045).float()
    lin = ((rgb + 0.055) / 1.055) ** 2.4 * mask + rgb / 12.92 * (1 - mask)
    m = torch.tensor([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                      [0.019334, 0.119193, 0.950227]], device=rgb.device)
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    xyz = xyz / torch.tensor([0.95047, 1.0, 1.08883], device=rgb.device)[None, :, None, None]
    mask = (xyz > 0.008856).float()
    f = xyz ** (1 / 3) * mask + (7.787 * xyz + 16 / 116) * (1 - mask)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], dim=1)


def anchor_data(rgb_uint8: torch.Tensor, p: float = 0.125, ab_thresh: float = 5.0, patch_sizes=range(1, 10),
                l_cent: float = 50.0, l_norm: float = 100.0, ab_norm: float = 110.0, mask_cent: float = 0.5):
    """get_colorization_data: Lab, normalised; grayscale images dropped (ab range < ab_thresh); then
    for each image, a geometric number of hints (continue with probability 1 - p): patch side drawn
    from patch_sizes, corner from N(centre, side/4) clipped, patch = its mean ab; mask minus mask_cent."""
    lab = anchor_rgb2lab(rgb_uint8.float() / 255)
    a, b = (lab[:, :1] - l_cent) / l_norm, lab[:, 1:] / ab_norm
    spread = (b.amax(dim=(2, 3)) - b.amin(dim=(2, 3))).abs().sum(dim=1)
    keep = spread >= ab_thresh / ab_norm
    a, b = a[keep], b[keep]
    n, c, h, w = b.shape
    hint, mask = torch.zeros_like(b), torch.zeros_like(a)
    sizes = list(patch_sizes)
    for i in range(n):
        while np.random.rand() < 1 - p:
            size = int(np.random.choice(sizes))
            top = int(np.clip(np.random.normal((h - size + 1) / 2, (h - size + 1) / 4), 0, h - size))
            left = int(np.clip(np.random.normal((w - size + 1) / 2, (w - size + 1) / 4), 0, w - size))
            patch = b[i, :, top:top + size, left:left + size]
            hint[i, :, top:top + size, left:left + size] = patch.mean(dim=(1, 2), keepdim=True)
            mask[i, :, top:top + size, left:left + size] = 1
    return a, b, hint, mask - mask_cent


# --- steps ------------------------------------------------------------------------------------------
def build(experiment: str, size: int | None, device: str, tmp: str, extra: list[str]):
    overrides = [f"prior.cache_dir={tmp}", "prior.max_images=64", "data.num_workers=0", "optim.scheduler=none", *extra]
    if size is not None:
        overrides.append(f"data.size={size}")
    cfg = compose(experiment, overrides)
    if size is not None and cfg.choices.get("net") == "eccv16" and size >= 256:
        cfg = compose(experiment, overrides + ["net.width=64"])
    return cfg, *model_and_optimizer(cfg, device)


def colorlab_step(model, opt, rgb):
    training_step(model, opt, {"rgb": rgb})


def anchor_step(model, opt, rgb):
    l, ab, hint, mask = anchor_data(rgb.cpu())  # their loop runs on the host
    batch = {"rgb": rgb, "l": l.to(rgb.device), "ab": ab.to(rgb.device), "hint_ab": hint.to(rgb.device),
             "hint_mask": mask.to(rgb.device)}
    loss = model.loss(model.run_net(batch), batch)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure(step, model, opt, rgb, device, steps):
    step(model, opt, rgb)  # warm-up
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        step(model, opt, rgb)
        sync(device)
        times.append(time.perf_counter() - start)
    return rgb.shape[0] / statistics.median(times)


def time_hint_sampling(model, rgb, reps: int = 5) -> tuple[float, float]:
    """Median seconds of colorlab's batched Lab + hint sampling and of the anchor's data step."""
    from colorlab.hints import sample_hints

    def ours():
        batch = add_lab({"rgb": rgb})
        sample_hints(batch["ab"], model.hint_sampling)

    out = []
    for fn in (ours, lambda: anchor_data(rgb.cpu())):
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out.append(statistics.median(times))
    return out[0], out[1]


def count_flops(model, opt, rgb) -> int:
    with FlopCounterMode(display=False) as counter:
        colorlab_step(model, opt, rgb)
    return counter.get_total_flops()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--experiment", nargs="+", default=list(DEFAULT_EXPERIMENTS),
                        choices=sorted(available_experiments()))
    parser.add_argument("--size", type=int, nargs="+", default=None,
                        help="crop sizes (default: the experiment's own and 256)")
    parser.add_argument("--batch", type=int, default=None,
                        help="default: the experiment's data.batch_size (at most 4 from 128 px on the CPU)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], help="extra overrides, e.g. trainer.precision=...")
    args = parser.parse_args(argv)
    if args.steps < 1 or min(args.size or [1]) < 1 or (args.batch or 1) < 1:
        parser.error(f"--steps, --size and --batch must be >= 1. Got {args.steps}, {args.size}, {args.batch}")
    check_overrides(parser, args.experiment, args.set)
    return args


def main() -> int:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    np.random.seed(0)
    peak = matmul_peak(args.device, torch.float32)
    print(f"device {args.device}, threads {torch.get_num_threads()}, fp32 dense matmul peak "
          f"{peak / 1e9:.1f} GFLOP/s (measured now)")
    print(f"{'experiment':<14} {'px':>4} {'batch':>5} {'img/s':>8} {'GFLOP/img':>10} {'GFLOP/s':>8} {'MFU':>6}"
          f" {'anchor img/s':>13} {'ratio':>6}")
    ratios, hint_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for experiment in args.experiment:
            own = compose(experiment, [f"prior.cache_dir={tmp}"]).data.size
            for size in args.size or sorted({own, 256}):
                cfg, model, opt = build(experiment, size, args.device, tmp, args.set)
                batch = args.batch or cfg.data.batch_size
                if args.batch is None and args.device == "cpu" and size >= 128:
                    batch = min(batch, 4)  # keeps the CPU run to a few minutes
                scenes = SyntheticScenes(size, batch, 0, "train")
                rgb = torch.stack([scenes[i]["rgb"] for i in range(batch)]).to(args.device)
                flops = count_flops(model, opt, rgb)
                rate = measure(colorlab_step, model, opt, rgb, args.device, args.steps)
                anchor = ""
                if model.hint_sampling is not None:
                    anchor_rate = measure(anchor_step, model, opt, rgb, args.device, args.steps)
                    rate = max(rate, measure(colorlab_step, model, opt, rgb, args.device, args.steps))
                    ratios.append(rate / anchor_rate)
                    hint_times.append(time_hint_sampling(model, rgb))
                    anchor = f"{anchor_rate:13.1f} {rate / anchor_rate:5.2f}x"
                achieved = rate * flops / batch
                print(f"{experiment:<14} {size:>4} {batch:>5} {rate:8.1f} {flops / batch / 1e9:10.3f} "
                      f"{achieved / 1e9:8.1f} {achieved / peak:6.1%} {anchor}")
                del model, opt
    target = TARGET[args.device]
    if not ratios:
        print("target: PASS (no hint experiment selected: no anchor ratio to check)")
        return 0
    for ours, theirs in hint_times:
        print(f"data step alone (Lab + hints): colorlab {ours * 1e3:.1f} ms, anchor loop {theirs * 1e3:.1f} ms "
              f"({theirs / ours:.1f}x)")
    worst = min(ratios)
    print(f"hints_unet step vs colorization-pytorch's per-image hint loop: {worst:.2f}x (target >= {target}x)")
    ok = worst >= target
    print("target: PASS" if ok else f"target: FAIL (ratio {worst:.2f}x < {target}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
