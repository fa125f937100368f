"""The speed configuration keys (``speed.*``), each on and off, on this device, in one process.

The full training step of one experiment (default: unet_bins, the README's main job, at its size and
batch; Lab conversion, targets, loss, backward, AdamW step) with the defaults and with one key
flipped. On the CPU (the defaults of ``trainer=default``): ``optim.fused=true`` (fused AdamW),
``speed.channels_last=false``, ``speed.compile=true`` (torch.compile of the network) and bf16 autocast
around the step (what ``trainer.precision=bf16-mixed`` does; Lab conversion stays outside it, in
fp32). On a GPU (``--device cuda``, the defaults of ``trainer=gpu``: bf16-mixed): the same keys, plus
fp32 in NHWC and NCHW with cuDNN/matmul TF32 as PyTorch leaves them (cuDNN on, matmul off) and with
both off. Variants are interleaved round by round so that a shared machine's load hits them alike;
medians. Target: at the experiment's budget (its steps per epoch x max_epochs, first step included:
compilation is paid once per run), the defaults are the fastest measured within timing noise (no
variant at the same precision more than ``--noise`` faster), so that no default leaves speed unused; on a
GPU also ``speed.channels_last=auto`` in fp32 picks the faster of the two fp32 layouts.
A variant whose settings the defaults (or an earlier variant) already have, e.g. ``speed.channels_last=true``
where ``auto`` resolves to NHWC, is measured once and reported under both names. ``--max-seconds`` caps
the timed seconds per variant (at least one step a round), so that a slow variant (eccv16 in fp32 NHWC
on a GPU: about 4 s a step) does not hold the run for minutes.

    python benchmarks/speed_keys.py [--device cpu|cuda] [--experiment unet_bins] [--set key=value ...]
                                    [--rounds 3] [--steps 4] [--noise 0.1] [--skip NAME ...] [--max-seconds S]
e.g. on a GPU: --device cuda --experiment eccv16_full --set data.size=256 net.width=64 data.batch_size=64
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time

import torch
from steps import check_overrides, model_and_optimizer, training_step

from colorlab.config import available_experiments, compose
from colorlab.data.synthetic import SyntheticScenes
from colorlab.models import channels_last

# name -> (overrides, TF32 off); the defaults are those of trainer=default on the CPU, trainer=gpu on a GPU
VARIANTS = {
    "cpu": {"defaults": ([], False), "optim.fused=true": (["optim.fused=true"], False),
            "speed.channels_last=false": (["speed.channels_last=false"], False),
            "speed.compile=true": (["speed.compile=true"], False),
            "bf16 autocast": (["trainer.precision=bf16-mixed"], False)},
    "cuda": {"defaults": ([], False), "optim.fused=true": (["optim.fused=true"], False),
             "speed.channels_last=true": (["speed.channels_last=true"], False),
             "speed.channels_last=false": (["speed.channels_last=false"], False),
             "speed.compile=true": (["speed.compile=true"], False),
             "fp32": (["trainer.precision=32-true"], False),
             "fp32 NHWC": (["trainer.precision=32-true", "speed.channels_last=true"], False),
             "fp32 NCHW": (["trainer.precision=32-true", "speed.channels_last=false"], False),
             "fp32 NHWC, TF32 off": (["trainer.precision=32-true", "speed.channels_last=true"], True),
             "fp32 NCHW, TF32 off": (["trainer.precision=32-true", "speed.channels_last=false"], True)},
}
BASE = {"cpu": [], "cuda": ["trainer=gpu"]}


def variant_config(experiment: str, tmp: str, extra: list[str], device: str = "cpu"):
    return compose(experiment, [*BASE[device], f"prior.cache_dir={tmp}", "prior.max_images=64", "data.num_workers=0",
                                "optim.scheduler=none", *extra])


def settings(cfg, tf32_off: bool) -> tuple:
    """What a variant changes in the step: precision, the network's layout as ``speed.channels_last`` resolves
    it, fused AdamW, compile, TF32. Two variants with the same settings are one measurement."""
    return (str(cfg.trainer.precision), channels_last(cfg.speed.channels_last, cfg.trainer, cfg.net.name),
            bool(cfg.optim.get("fused", False)), bool(cfg.speed.compile), tf32_off)


@contextlib.contextmanager
def tf32(off: bool):
    """cuDNN and matmul TF32 off for the block (PyTorch's defaults: cuDNN on, matmul off)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if off:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def step(model, opt, rgb, bf16: bool, tf32_off: bool = False) -> None:
    with tf32(tf32_off):  # the whole step, backward included
        training_step(model, opt, {"rgb": rgb}, bf16)
    if rgb.is_cuda:
        torch.cuda.synchronize()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--experiment", default="unet_bins", choices=sorted(available_experiments()))
    parser.add_argument("--set", nargs="*", default=[], help="overrides for every variant, e.g. data.size=256")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.1, help="a variant this much faster than the defaults fails")
    parser.add_argument("--skip", nargs="*", default=[], metavar="VARIANT",
                        choices=sorted({name for variants in VARIANTS.values() for name in variants}),
                        help="variants to leave out, e.g. speed.compile=true")
    parser.add_argument("--max-seconds", type=float, default=float("inf"),
                        help="timed seconds per variant at most (at least one step a round): bounds slow variants "
                             "such as eccv16 in fp32 NHWC on a GPU")
    args = parser.parse_args(argv)
    if "defaults" in args.skip:
        parser.error("--skip defaults: every variant is compared with the defaults")
    if min(args.rounds, args.steps) < 1:
        parser.error(f"--rounds and --steps must be >= 1. Got {args.rounds}, {args.steps}")
    check_overrides(parser, [args.experiment], [*BASE[args.device], *args.set])
    return args


def main() -> int:
    args = parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    variants = {name: v for name, v in VARIANTS[args.device].items() if name not in args.skip}
    with tempfile.TemporaryDirectory() as tmp:
        models, failed, first, bf16, same_as, measured = {}, {}, {}, {}, {}, {}
        for name, (extra, tf32_off) in variants.items():
            cfg = variant_config(args.experiment, tmp, [*args.set, *extra], args.device)
            key = settings(cfg, tf32_off)
            if key in measured:  # e.g. speed.channels_last=true where the defaults already run NHWC
                same_as[name] = measured[key]
                continue
            measured[key] = name
            torch.manual_seed(0)
            model, opt = model_and_optimizer(cfg, args.device)
            torch.backends.cudnn.benchmark = bool(cfg.trainer.benchmark)  # as the Trainer sets it (trainer=gpu: on)
            bf16[name] = str(cfg.trainer.precision).startswith("bf16")
            scenes = SyntheticScenes(cfg.data.size, cfg.data.batch_size, 0, "train")
            rgb = torch.stack([scenes[i]["rgb"] for i in range(cfg.data.batch_size)]).to(args.device)
            try:
                start = time.perf_counter()
                step(model, opt, rgb, bf16[name], tf32_off)  # warm-up (and compilation)
                first[name] = time.perf_counter() - start
                print(f"{name}: first step {first[name]:.1f} s", flush=True)
                models[name] = (model, opt, tf32_off)
            except Exception as e:  # noqa: BLE001 - a key that cannot run here is reported, not fatal
                failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                print(f"{name}: failed ({failed[name]})", flush=True)
        if "defaults" not in models:
            print(f"target: FAIL (the defaults cannot run here: {failed['defaults']})")
            return 1
        times = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, (model, opt, tf32_off) in models.items():
                spent = 0.0
                for i in range(args.steps):
                    if i and spent >= args.max_seconds / args.rounds:
                        break
                    start = time.perf_counter()
                    step(model, opt, rgb, bf16[name], tf32_off)
                    times[name].append(time.perf_counter() - start)
                    spent += times[name][-1]
        times = {name: times.get(name) or times.get(same_as.get(name)) for name in variants
                 if name in times or same_as.get(name) in times}  # the variants' order; a twin under both names
        for name, twin in same_as.items():
            if twin in times:
                first[name], bf16[name] = first[twin], bf16[twin]
            elif twin in failed:
                failed[name] = failed[twin]
    budget = cfg.data.train_size // cfg.data.batch_size * cfg.trainer.max_epochs if "train_size" in cfg.data else 0
    median = {name: statistics.median(t) for name, t in times.items()}
    run = {name: first[name] + budget * median[name] for name in times}  # seconds of steps at the budget
    print(f"\n{args.experiment}, {cfg.data.size} px, batch {cfg.data.batch_size}, {args.device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; budget {budget} steps\n")
    print("| variant | first step (s) | timed steps | median step (ms) | img/s | step speed vs defaults "
          "| steps at the budget (s) | run speed vs defaults |\n|---|---|---|---|---|---|---|---|")
    for name in times:
        label = f"{name} (same settings as {same_as[name]})" if name in same_as else name
        print(f"| {label} | {first[name]:.1f} | {len(times[name])} | {1000 * median[name]:.1f} "
              f"| {cfg.data.batch_size / median[name]:.0f} | {median['defaults'] / median[name]:.2f}x "
              f"| {run[name]:.0f} | {run['defaults'] / run[name]:.2f}x |")
    for name, why in failed.items():
        print(f"| {name} | failed: {why} | — | — | — | — | — | — |")
    problems = [f"{n} more than {args.noise:.0%} faster than the defaults at the budget" for n in times
                if bf16[n] == bf16["defaults"] and run["defaults"] / run[n] > 1 + args.noise]
    if args.device == "cuda" and {"fp32", "fp32 NHWC", "fp32 NCHW"} <= set(times):
        fastest = min(("fp32 NHWC", "fp32 NCHW"), key=median.get)
        if median["fp32"] > median[fastest] * (1 + args.noise):
            problems.append(f"fp32 with channels_last=auto is slower than {fastest}")
    if problems:
        print(f"target: FAIL ({'; '.join(problems)})")
        return 1
    print("target: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
