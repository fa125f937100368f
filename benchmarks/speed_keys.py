"""The speed configuration keys (``speed.*``), each on and off, on this device, in one process.

The full training step of one experiment (default: unet_bins, the README's main job, at its size and
batch; Lab conversion, targets, loss, backward, AdamW step) with the defaults and with one key
flipped: ``optim.fused=true`` (fused AdamW), ``speed.channels_last=true``, ``speed.compile=true``
(torch.compile of the network) and bf16 autocast around the step (what ``trainer.precision=bf16-mixed``
does; Lab conversion stays outside it, in fp32). Variants are interleaved round by round so that a
shared machine's load hits them alike; medians. Target: at the experiment's budget (its steps per
epoch x max_epochs, first step included: compilation is paid once per run), the defaults are the
fastest measured within timing noise (no variant more than ``--noise`` faster), so that no default
leaves speed unused.

    python benchmarks/speed_keys.py [--experiment unet_bins] [--rounds 3] [--steps 4] [--noise 0.1] [--skip NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time

import torch

from colorlab.config import compose
from colorlab.data import add_lab
from colorlab.data.synthetic import SyntheticScenes
from colorlab.models import build_model
from colorlab.prior import load_or_compute_prior

VARIANTS = {"defaults": [], "optim.fused=true": ["optim.fused=true"],
            "speed.channels_last=true": ["speed.channels_last=true"], "speed.compile=true": ["speed.compile=true"],
            "bf16 autocast": []}


def build(experiment: str, tmp: str, extra: list[str]):
    cfg = compose(experiment, [f"prior.cache_dir={tmp}", "prior.max_images=64", "data.num_workers=0",
                               "optim.scheduler=none", *extra])
    torch.manual_seed(0)
    model = build_model(cfg, load_or_compute_prior(cfg)["counts"]).train()
    model.log = lambda *a, **k: None  # outside a Trainer
    opt = model.configure_optimizers()
    return cfg, model, opt["optimizer"] if isinstance(opt, dict) else opt


def step(model, opt, rgb, bf16: bool) -> None:
    batch = add_lab({"rgb": rgb})  # fp32 Lab, outside autocast as in training
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with autocast:
        loss = model.training_step(batch, 0)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", default="unet_bins")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.1, help="a variant this much faster than the defaults fails")
    parser.add_argument("--skip", nargs="*", default=[], help="variants to leave out, e.g. speed.compile=true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models, failed, first = {}, {}, {}
        for name, extra in VARIANTS.items():
            if name in args.skip:
                continue
            cfg, model, opt = build(args.experiment, tmp, extra)
            scenes = SyntheticScenes(cfg.data.size, cfg.data.batch_size, 0, "train")
            rgb = torch.stack([scenes[i]["rgb"] for i in range(cfg.data.batch_size)])
            try:
                start = time.perf_counter()
                step(model, opt, rgb, name == "bf16 autocast")  # warm-up (and compilation)
                first[name] = time.perf_counter() - start
                print(f"{name}: first step {first[name]:.1f} s", flush=True)
                models[name] = (model, opt)
            except Exception as e:  # noqa: BLE001 - a key that cannot run here is reported, not fatal
                failed[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"
                print(f"{name}: failed ({failed[name]})", flush=True)
        times = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, (model, opt) in models.items():
                for _ in range(args.steps):
                    start = time.perf_counter()
                    step(model, opt, rgb, name == "bf16 autocast")
                    times[name].append(time.perf_counter() - start)
    budget = cfg.data.train_size // cfg.data.batch_size * cfg.trainer.max_epochs if "train_size" in cfg.data else 0
    median = {name: statistics.median(t) for name, t in times.items()}
    run = {name: first[name] + budget * median[name] for name in times}  # seconds of steps at the budget
    print(f"\n{args.experiment}, {cfg.data.size} px, batch {cfg.data.batch_size}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; budget {budget} steps\n")
    print("| variant | first step (s) | median step (ms) | step speed vs defaults | steps at the budget (s) | "
          "run speed vs defaults |\n|---|---|---|---|---|---|")
    for name in times:
        print(f"| {name} | {first[name]:.1f} | {1000 * median[name]:.0f} | {median['defaults'] / median[name]:.2f}x | "
              f"{run[name]:.0f} | {run['defaults'] / run[name]:.2f}x |")
    for name, why in failed.items():
        print(f"| {name} | failed: {why} | — | — | — | — |")
    faster = [n for n in times if run["defaults"] / run[n] > 1 + args.noise]
    if faster:
        print(f"target: FAIL ({', '.join(faster)} more than {args.noise:.0%} faster than the defaults at the budget)")
        return 1
    print("target: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
