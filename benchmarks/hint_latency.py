"""Latency of one hint update in the interactive page, against a network of Zhang et al. 2017's size.

One update = what colorlab.app does after a click: encode the hints, run the network, decode ab,
upsample it and recombine it with the full-resolution L of a 256x256 photo into RGB (the photo's
Lab and its L at the working size are prepared once per upload, as in the app). The hints_unet
network is timed at its working size (64 px, how it was trained) and at the photo's full 256 px.
The baseline is a network of the released SIGGRAPH generator's layout and size (34.2 M parameters,
4 input channels: L, hint ab, mask) on the same 256x256 input, built here with random weights
(only its cost matters). Target: the 256 px hint update takes at most 150 ms.

    python benchmarks/hint_latency.py [--ckpt PATH] [--hints 10] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

from colorlab.config import compose
from colorlab.hints import Hint
from colorlab.inference import PhotoColorizer
from colorlab.models import build_model, load_colorizer, placeholder_prior

TARGET_MS = 150.0


def conv_block(c_in: int, c_out: int, n: int, dilation: int = 1, norm: bool = True) -> list[nn.Module]:
    layers = []
    for i in range(n):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, 1, dilation, dilation), nn.ReLU(True)]
    return layers + ([nn.BatchNorm2d(c_out)] if norm else [])


class SiggraphSizedGenerator(nn.Module):
    """The layout of colorization-pytorch's SIGGRAPHGenerator (conv1-10 with shortcuts, 529 class
    maps, 2 regression maps): 34.2 M parameters, input (B, 4, H, W)."""

    def __init__(self):
        super().__init__()
        self.m1 = nn.Sequential(*conv_block(4, 64, 2))
        self.m2 = nn.Sequential(*conv_block(64, 128, 2))
        self.m3 = nn.Sequential(*conv_block(128, 256, 3))
        self.m4 = nn.Sequential(*conv_block(256, 512, 3))
        self.m5 = nn.Sequential(*conv_block(512, 512, 3, dilation=2))
        self.m6 = nn.Sequential(*conv_block(512, 512, 3, dilation=2))
        self.m7 = nn.Sequential(*conv_block(512, 512, 3))
        self.up8, self.short8 = nn.ConvTranspose2d(512, 256, 4, 2, 1), nn.Conv2d(256, 256, 3, 1, 1)
        self.m8 = nn.Sequential(nn.ReLU(True), *conv_block(256, 256, 2))
        self.up9, self.short9 = nn.ConvTranspose2d(256, 128, 4, 2, 1), nn.Conv2d(128, 128, 3, 1, 1)
        self.m9 = nn.Sequential(nn.ReLU(True), *conv_block(128, 128, 1))
        self.up10, self.short10 = nn.ConvTranspose2d(128, 128, 4, 2, 1), nn.Conv2d(64, 128, 3, 1, 1)
        self.m10 = nn.Sequential(nn.ReLU(True), nn.Conv2d(128, 128, 3, 1, 1), nn.LeakyReLU(0.2))
        self.classes = nn.Conv2d(256, 529, 1)
        self.out = nn.Conv2d(128, 2, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        c1 = self.m1(x)
        c2 = self.m2(self.pool(c1))
        c3 = self.m3(self.pool(c2))
        c7 = self.m7(self.m6(self.m5(self.m4(self.pool(c3)))))
        c8 = self.m8(self.up8(c7) + self.short8(c3))
        self.classes(c8)
        c9 = self.m9(self.up9(c8) + self.short9(c2))
        c10 = self.m10(self.up10(c9) + self.short10(c1))
        return torch.tanh(self.out(c10))


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", help="a hints_unet checkpoint (default: hints_unet with random weights)")
    parser.add_argument("--hints", type=int, default=10, help="hints in each update")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.ckpt:
        model = load_colorizer(args.ckpt)
    else:  # random weights: what is timed does not depend on them
        cfg = compose("hints_unet", [])
        model = build_model(cfg, placeholder_prior(cfg)).eval()
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    hints = [Hint(float(x), float(y), (float(a), float(b)))
             for x, y, a, b in zip(rng.uniform(0, 255, args.hints), rng.uniform(0, 255, args.hints),
                                   rng.uniform(-60, 60, args.hints), rng.uniform(-60, 60, args.hints), strict=True)]
    figures = {}
    for size in (model.config["data"]["size"], 256):
        colorizer = PhotoColorizer(model, size)
        prepared = colorizer.prepare(photo)
        figures[size] = median_ms(lambda c=colorizer, p=prepared: c.run(p, hints), args.repeats)
    baseline = SiggraphSizedGenerator().eval()
    n_params = sum(p.numel() for p in baseline.parameters()) / 1e6
    x = torch.randn(1, 4, 256, 256)
    with torch.no_grad():
        t_baseline = median_ms(lambda: baseline(x), max(3, args.repeats // 3))
    n_model = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; 256x256 photo, {args.hints} hints")
    for size, ms in figures.items():
        print(f"hints_unet ({n_model:.2f} M params) hint update, network at {size} px: {ms:.1f} ms")
    print(f"baseline: Zhang 2017-sized generator ({n_params:.1f} M params) forward at 256 px: {t_baseline:.0f} ms")
    full = figures[256]
    print(f"ratio hints_unet (256 px update) / baseline: {full / t_baseline:.3f} ({t_baseline / full:.0f}x faster)")
    if full <= TARGET_MS:
        print(f"target: PASS ({full:.1f} ms <= {TARGET_MS:.0f} ms)")
        return 0
    print(f"target: FAIL ({full:.1f} ms > {TARGET_MS:.0f} ms)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
