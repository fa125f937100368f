"""The data=folder path alone, per worker: decode, resize, crop (and flip) of generated JPEGs, images/s.

Two kinds of photo, generated in a temporary folder: ImageNet-like (about 500 x 375) and large
(4000 x 3000 and 3000 x 4500). Each is read through FolderImages (training items: random shorter
side in [size, scale], random crop and flip) with reduced-scale JPEG decoding (PIL draft mode) on
and off, interleaved, in this one process (= one DataLoader worker). Prints images/s per worker and
the workers needed to feed --train-rate images/s (the training rate measured by
benchmarks/throughput.py on the target device).
Target: draft mode >= 2x faster on the large photos (shorter side >= 4x the crop's scale).

    python benchmarks/data_path.py [--size 224] [--images 8] [--rounds 3] [--train-rate 1000]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from colorlab.data.photos import FolderImages

TARGET_SPEEDUP = 2.0


def photo_like(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 RGB with colour regions and finer texture (JPEG-compresses like a photo, not like noise)."""
    out = np.zeros((height, width, 3), np.float32)
    for cell, weight in ((max(width, height) // 6, 0.6), (48, 0.3), (6, 0.1)):
        small = rng.integers(0, 256, (height // cell + 2, width // cell + 2, 3), dtype=np.uint8)
        up = Image.fromarray(small).resize(((width // cell + 2) * cell, (height // cell + 2) * cell),
                                           Image.BILINEAR)
        out += weight * np.asarray(up, np.float32)[:height, :width]
    return np.clip(out, 0, 255).astype(np.uint8)


def make_folder(root: Path, sizes: list[tuple[int, int]], n: int, seed: int) -> list[Path]:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        path = root / f"{i:04d}.jpg"
        Image.fromarray(photo_like(w, h, rng)).save(path, format="JPEG", quality=90)
        paths.append(path)
    return paths


def images_per_s(dataset: FolderImages, passes: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        for i in range(len(dataset)):
            dataset[i]
    return passes * len(dataset) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=224, help="crop side (scale = size * 8 / 7)")
    parser.add_argument("--images", type=int, default=8, help="photos of each kind")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved on/off rounds (median kept)")
    parser.add_argument("--train-rate", type=float, default=None,
                        help="training images/s to feed (from benchmarks/throughput.py)")
    args = parser.parse_args()
    kinds = {"imagenet-like": [(500, 375), (375, 500), (500, 333)],
             "large photos": [(4000, 3000), (3000, 4500)]}
    print(f"data=folder per worker (one process), crop {args.size}, {args.images} JPEGs of each kind, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'photos':<15} {'full decode':>12} {'draft mode':>12} {'speedup':>8}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed, (kind, sizes) in enumerate(kinds.items()):
            paths = make_folder(Path(tmp) / kind.replace(" ", "_"), sizes, args.images, seed)
            rates = {True: [], False: []}
            for _ in range(args.rounds):
                for reduced in (False, True):
                    dataset = FolderImages(paths, args.size, None, train=True, seed=0)
                    dataset.reduced_decode = reduced
                    rates[reduced].append(images_per_s(dataset, passes=1 if kind == "large photos" else 4))
            full, draft = statistics.median(rates[False]), statistics.median(rates[True])
            results[kind] = (full, draft)
            print(f"{kind:<15} {full:9.1f}/s {draft:9.1f}/s {draft / full:7.2f}x")
        scale = FolderImages(paths, args.size, None, train=True).scale
    if args.train_rate:
        print(f"workers needed to feed {args.train_rate:.0f} images/s:")
        for kind, (full, draft) in results.items():
            print(f"  {kind:<15} full decode {math.ceil(args.train_rate / full):4d}   "
                  f"draft mode {math.ceil(args.train_rate / draft):4d}")
    speedup = results["large photos"][1] / results["large photos"][0]
    print(f"large photos (shorter side 3000 >= 4 x scale {scale}): speedup {speedup:.2f}x "
          f"(target >= {TARGET_SPEEDUP}x)")
    ok = speedup >= TARGET_SPEEDUP
    print("target: PASS" if ok else f"target: FAIL (speedup {speedup:.2f}x < {TARGET_SPEEDUP}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
