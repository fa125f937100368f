"""Cost of the 2D-bin formulation on top of its network: unet_bins at 64 px, batch 32, CPU.

Times a full training step (soft encoding, rebalancing weights, cross-entropy, backward) and the
bare network forward + backward on the same batch (loss = mean of the logits), interleaved.
Target: full step <= 1.15x the bare step.

    python benchmarks/train_step.py [--steps 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import torch

from colorlab.config import compose
from colorlab.data import add_lab
from colorlab.data.prior import load_or_compute_prior
from colorlab.data.synthetic import SyntheticScenes
from colorlab.models import build_model

TARGET_RATIO = 1.15


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose("unet_bins", [f"prior.cache_dir={tmp}", "prior.max_images=256", "data.num_workers=0"])
        model = build_model(cfg, load_or_compute_prior(cfg)["counts"]).train()
    dataset = SyntheticScenes(64, 32, 0, "train")
    batch = add_lab({"rgb": torch.stack([dataset[i]["rgb"] for i in range(32)])})

    def bare():
        model.zero_grad(set_to_none=True)
        model.net(batch["l"]).mean().backward()

    def full():
        model.zero_grad(set_to_none=True)
        model.loss(model.net(batch["l"]), batch).backward()

    for fn in (bare, full):
        fn()
    times = {"bare": [], "full": []}
    for _ in range(args.steps):
        for name, fn in (("bare", bare), ("full", full)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    t_bare, t_full = statistics.median(times["bare"]), statistics.median(times["full"])
    ratio = t_full / t_bare
    print(f"unet_bins, 64 px, batch 32, Q = {model.centers.shape[0]}, loss_stride = {model.loss_stride}, "
          f"threads = {torch.get_num_threads()}")
    print(f"bare network forward + backward: {t_bare * 1e3:8.1f} ms")
    print(f"full training step:              {t_full * 1e3:8.1f} ms")
    print(f"ratio: {ratio:.3f} (target <= {TARGET_RATIO})")
    ok = ratio <= TARGET_RATIO
    print("target: PASS" if ok else f"target: FAIL (ratio {ratio:.3f} > {TARGET_RATIO})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
