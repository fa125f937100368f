"""Colourise photos with any trained checkpoint:
``python -m colorlab.colorize ckpt=PATH input=FILE_OR_DIR out=DIR [hints=FILE.json] [temperature=T]
[size=N] [gamma=G] [saturation=S] [palette=K] [palette_at=X,Y]``.

The network sees L at its working size (``size``, default the training crop ``data.size``); the
predicted ab is upsampled and recombined with the full-resolution L, so the output has the input's
exact size and detail. Colour or gray JPEG/PNG/WebP, RGBA, palette and 16-bit PNG, EXIF-rotated
photos are accepted; unreadable files are skipped and counted. Outputs are PNGs in ``out``; an
existing file (an input included) is never written over: the name gets a -1, -2, ... suffix.

- ``hints``: a JSON list of points in pixels of the input image (one input file), e.g.
  ``[{"x": 120, "y": 64, "color": "#d02020"}, {"x": 30, "y": 200, "ab": [40, -20], "size": 12}]``;
  ``size`` is the patch side in input pixels (default: 3 pixels of the network's input). Needs a
  model trained with hints (experiment=hints_unet).
- ``gamma`` (brightness, 1 = off) and ``saturation`` (chroma factor, 1 = off): seed 003's enhancement.
- ``palette=K``: K suggested colours from K-means over the whole prediction, and with
  ``palette_at=X,Y`` also over samples of the predicted ab distribution at that pixel (models
  with a distribution: bins formulations, or regression with a bins head); written as
  ``<name>_palette.png`` (swatches) and ``<name>_palette.json``.
"""

from __future__ import annotations

import math
import os
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from colorlab.cli import error
from colorlab.config import compute_device, key_value_options, usage_exit_code
from colorlab.hints import load_hints
from colorlab.inference import PhotoColorizer, Prepared, Result, check_enhancement
from colorlab.io import IMAGE_SUFFIXES, UnreadableImage, read_rgb, summarize_skips

OPTIONS = ("ckpt", "input", "out", "hints", "temperature", "size", "gamma", "saturation", "palette", "palette_at")
def free_path(path: Path) -> Path:
    """path, or path with -1, -2, ... before the suffix when it exists: nothing is written over."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def create_free(path: Path):
    """Open path (or path-1, path-2, ...) for writing, created exclusively and never through a symlink
    (O_CREAT | O_EXCL | O_NOFOLLOW): (binary file, the path used)."""
    candidate, n = path, 0
    while True:
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
            return os.fdopen(fd, "wb"), candidate
        except FileExistsError:  # a file, a directory or a link (dangling included) has that name
            n += 1
            candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")


def list_inputs(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    raise FileNotFoundError(f"input={source} is neither a file nor a directory")


def parse_point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"palette_at must be X,Y in pixels of the input image. Got {text!r}") from None
    return x, y


@dataclass(frozen=True)
class ColorizeOptions:
    """What colorize does to each photo, checked when made: ValueError naming the option and what is valid."""

    temperature: float | None = None  # bins formulations: annealed-mean T (0: the mode); None: the checkpoint's
    size: int | None = None  # the network's working size; None: the training crop
    hints: Path | None = None  # a hints file: points on one input image
    gamma: float = 1.0
    saturation: float = 1.0
    palette: int = 0  # suggested colours written beside each result (0: none)
    palette_at: tuple[float, float] | None = None  # and the colours suggested at this pixel

    def __post_init__(self):
        if self.palette < 0 or (self.palette_at is not None and self.palette == 0):
            raise ValueError(f"palette must be a number of colours >= 1 (palette_at needs it). Got {self.palette}")
        check_enhancement(self.gamma, self.saturation)
        t = self.temperature
        if t is not None and not (math.isfinite(t) and 0 <= t <= 100):
            raise ValueError(f"temperature must be a number in [0, 100] (0 decodes the mode). Got {t}")
        if self.palette > 64:
            raise ValueError(f"palette must be at most 64 colours. Got {self.palette}")
        if self.size is not None and not 8 <= self.size <= 2048:
            raise ValueError(f"size must be in 8..2048 pixels. Got {self.size}")
        if self.palette_at is not None and not all(math.isfinite(v) for v in self.palette_at):
            raise ValueError(f"palette_at must be finite numbers. Got {self.palette_at}")

    @classmethod
    def from_strings(cls, options: dict[str, str]) -> ColorizeOptions:
        """From the command line's key=value strings (the keys of OPTIONS other than ckpt, input, out)."""
        number = {k: float(options[k]) for k in ("temperature", "gamma", "saturation") if k in options}
        return cls(number.get("temperature"), int(options["size"]) if "size" in options else None,
                   Path(options["hints"]) if "hints" in options else None, number.get("gamma", 1.0),
                   number.get("saturation", 1.0), int(options.get("palette", 0)),
                   parse_point(options["palette_at"]) if "palette_at" in options else None)


def colorize(checkpoint: Path, source: Path, out: Path, options: ColorizeOptions | None = None,
             **option_values) -> tuple[list[Path], Counter]:
    """Colourise every image under ``source`` into ``out``; returns (written files, skipped reasons).
    ``options``, or its fields as keywords (``temperature=0.2``)."""
    from colorlab.models import load_colorizer

    o = options or ColorizeOptions(**option_values)  # bad values stop here, before any work
    hints, palette_at = o.hints, o.palette_at
    if (hints is not None or palette_at is not None) and source.is_dir():
        raise ValueError("hints and palette_at are points on one image: give input=FILE, not a directory")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={out} is an existing file; give a directory")
    model = load_colorizer(checkpoint, compute_device())
    colorizer = PhotoColorizer(model, o.size, o.temperature)
    if hints is not None and not colorizer.takes_hints:
        raise ValueError(f"{checkpoint} was trained without hints (hints.enabled=false): it cannot use {hints}")
    if palette_at is not None and not model.predicts_distribution:
        raise ValueError("palette_at needs a model that predicts an ab distribution: a bins formulation, or "
                         "regression with model.bins_head=true (hints_unet)")
    inputs = list_inputs(source)
    written, skipped = [], Counter()
    for path in tqdm(inputs, desc="colorize", unit="image", disable=None if len(inputs) > 1 else True):
        try:
            rgb = read_rgb(path)
        except UnreadableImage as e:
            skipped[e.reason] += 1
            print(f"skipped: {e}", file=sys.stderr)
            continue
        points = load_hints(hints, rgb.shape[1], rgb.shape[0]) if hints is not None else None
        if palette_at is not None and not (0 <= palette_at[0] < rgb.shape[1] and 0 <= palette_at[1] < rgb.shape[0]):
            raise ValueError(f"palette_at ({palette_at[0]:g}, {palette_at[1]:g}) is outside the image; valid: "
                             f"0 <= x < {rgb.shape[1]}, 0 <= y < {rgb.shape[0]}")
        prepared = colorizer.prepare(rgb)
        result = colorizer.run(prepared, points, o.gamma, o.saturation)
        out.mkdir(parents=True, exist_ok=True)  # only once there is something to write
        handle, target = create_free(out / f"{path.stem}.png")
        with handle:
            Image.fromarray(result.rgb).save(handle, format="PNG")
        written.append(target)
        if o.palette:
            written += write_palette_files(colorizer, prepared, result, o.palette, palette_at, out, target.stem)
    return written, skipped


def write_palette_files(colorizer: PhotoColorizer, prepared: Prepared, result: Result, k: int,
                        point: tuple[float, float] | None, out: Path, stem: str) -> list[Path]:
    from colorlab.palette import palette_at_point, pixels_palette, write_palettes

    palettes = {"image": pixels_palette(result.pixels, k)}
    extra = {}
    if point is not None:
        x, y = point
        dist = colorizer.distribution_at(result.out, prepared.shape, x, y)
        palettes["point"] = palette_at_point(*dist, prepared.lightness(x, y), k)
        extra = {"point_xy": [x, y]}
    png, json_path = free_path(out / f"{stem}_palette.png"), free_path(out / f"{stem}_palette.json")
    write_palettes(palettes, png, json_path, extra)
    return [png, json_path]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        options = key_value_options(argv, OPTIONS, required=("ckpt", "input", "out"))
        written, skipped = colorize(Path(options["ckpt"]), Path(options["input"]), Path(options["out"]),
                                   ColorizeOptions.from_strings(options))
    except (FileNotFoundError, ValueError) as e:  # ConfigError and HintsError are ValueErrors
        return error("colorize", e)
    print(f"{len(written)} files written to {options['out']}")
    if skipped:
        print(summarize_skips(skipped, options["input"]))
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
