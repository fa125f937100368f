"""The embedding cache at work: koala with IRN2 fusion vs koala without, on the embedded data.

First the IRN2 embeddings of every whole image are computed (the one-time extra cost of fusion),
then both variants train for two epochs; with the cache, fusion's second epoch costs only the
fusion layer and a table lookup. Target: fusion's epoch 2 <= 1.15x the same epoch without fusion.

    python benchmarks/embed_cache.py [--images 512] [--size 299] [--weights random]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import pytorch_lightning as pl

from colorlab.config import compose
from colorlab.data import ColorDataModule
from colorlab.embed import attach_embeddings
from colorlab.fit import train

TARGET_RATIO = 1.15


class EpochTimer(pl.Callback):
    def __init__(self):
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer, module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.seconds.append(time.perf_counter() - self._start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=512, help="training scenes (64 px)")
    parser.add_argument("--size", type=int, default=299, help="IRN2 input side")
    parser.add_argument("--weights", default="random", help="embed.weights (no download here: random)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        common = [f"data.train_size={args.images}", "data.val_size=64", "trainer.max_epochs=2", "logger=none",
                  "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0", "trainer.accelerator=cpu",
                  f"embed.weights={args.weights}", f"embed.size={args.size}", f"embed.cache_dir={tmp}/emb"]
        fused = compose("koala_mse", common + [f"run_dir={tmp}/fused"])
        start = time.perf_counter()
        attach_embeddings(ColorDataModule(seed=fused.seed, **fused.data), fused)
        t_embed = time.perf_counter() - start
        timers = {}
        for name, extra in (("without fusion", ["embed.enabled=false"]), ("with fusion", [])):
            timers[name] = EpochTimer()
            train(compose("koala_mse", common + [f"run_dir={tmp}/{name.replace(' ', '_')}"] + extra), [timers[name]])
    n_items = args.images + 64
    print(f"koala, 64 px, {args.images} training scenes, IRN2 at {args.size} px, weights={args.weights}")
    per_image = t_embed / n_items * 1e3
    print(f"one-time IRN2 embedding of {n_items} whole images: {t_embed:.1f} s ({per_image:.0f} ms/image)")
    for name, timer in timers.items():
        print(f"{name:>15}: epoch 1 {timer.seconds[0]:6.2f} s, epoch 2 {timer.seconds[1]:6.2f} s")
    first_extra = t_embed + timers["with fusion"].seconds[0] - timers["without fusion"].seconds[0]
    ratio = timers["with fusion"].seconds[1] / timers["without fusion"].seconds[1]
    print(f"first epoch's extra cost with fusion (embedding included): {first_extra:.1f} s")
    print(f"epoch 2 ratio, with / without fusion: {ratio:.3f} (target <= {TARGET_RATIO})")
    ok = ratio <= TARGET_RATIO
    print("target: PASS" if ok else f"target: FAIL (epoch 2 ratio {ratio:.3f} > {TARGET_RATIO})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
