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

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from colorlab.cli import error
from colorlab.color import AB_NORM, L_CENTER, L_NORM, lab_to_uint8, uint8_to_lab
from colorlab.config import key_value_options, usage_exit_code
from colorlab.hints import Hint, encode_hints, load_hints
from colorlab.io import IMAGE_SUFFIXES, UnreadableImage, read_rgb, summarize_skips

OPTIONS = ("ckpt", "input", "out", "hints", "temperature", "size", "gamma", "saturation", "palette", "palette_at")
DEFAULT_HINT_PATCH = 3  # network pixels, when a hint gives no size
BAND_PIXELS = 1 << 18  # pixels converted at once when rendering a result: bounds its scratch memory


@dataclass
class Prepared:
    """One photo ready for repeated colourisation (the app keeps it between hint updates): 3 bytes
    per pixel at full resolution; each result recomputes the photo's L from them, exactly as Lab."""

    rgb: Tensor  # (1, 3, H, W) uint8 sRGB, full resolution
    l_small: Tensor  # (1, 1, size, size) normalised L at the network's working size
    embedding: Tensor | None  # (1, dim) global features for fusion networks

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the photo."""
        return self.rgb.shape[-2], self.rgb.shape[-1]

    def lightness(self, x: float, y: float) -> float:
        """L in [0, 100] of the photo at pixel (x, y)."""
        return float(uint8_to_lab(self.rgb[..., int(y):int(y) + 1, int(x):int(x) + 1])[0, 0, 0, 0])


@dataclass
class Result:
    rgb: np.ndarray  # uint8 (H, W, 3) at the input's size
    out: Tensor  # the network's raw output (1, C, h, w), for palettes and uncertainty
    pixels: Tensor  # (N, 3) the colourised Lab at the pixels image_palette clusters (palette_pixels)


def check_enhancement(gamma: float, saturation: float) -> None:
    if not (math.isfinite(gamma) and 0 < gamma <= 10 and math.isfinite(saturation) and 0 <= saturation <= 10):
        raise ValueError(f"gamma must be in (0, 10] and saturation in [0, 10]. Got {gamma}, {saturation}")


def enhance(lab: Tensor, gamma: float = 1.0, saturation: float = 1.0) -> np.ndarray:
    """Lab (1, 3, H, W) -> uint8 RGB (H, W, 3), chroma scaled by ``saturation`` and the RGB gamma-corrected
    (v -> 255 (v / 255)^(1 / gamma), seed 003's lookup table); 1 and 1 leave the image as it is."""
    check_enhancement(gamma, saturation)
    if saturation != 1.0:
        lab = torch.cat([lab[:, :1], lab[:, 1:] * saturation], dim=1)
    rgb = lab_to_uint8(lab)[0].permute(1, 2, 0).cpu().numpy()
    if gamma != 1.0:
        table = np.round(255.0 * (np.arange(256) / 255.0) ** (1.0 / gamma)).astype(np.uint8)
        rgb = table[rgb]
    return rgb


class PhotoColorizer:
    """A trained model applied to photos of any size, with optional hints: shared by colorize and the app."""

    def __init__(self, model, size: int | None = None, temperature: float | None = None):
        from colorlab.models.bins import BinsColorizer

        if temperature is not None and not isinstance(model, BinsColorizer):
            raise ValueError(f"temperature applies to bin formulations; this model is {model.config['model']['name']}")
        self.model, self.temperature = model, temperature
        self.band_pixels = BAND_PIXELS
        self.size = size or model.config["data"]["size"]
        multiple = model.net.size_multiple
        if self.size % multiple:
            raise ValueError(f"size must be a multiple of {multiple} for this network. Got {self.size}")
        self.device = next(model.parameters()).device
        self.embedder = None
        if model.config["embed"]["enabled"]:
            from colorlab.embed import GlobalEmbedder

            e = model.config["embed"]
            self.embedder = GlobalEmbedder(e["weights"], e["output"], e["size"], model.config["seed"]).to(self.device)

    @property
    def takes_hints(self) -> bool:
        return self.model.hint_sampling is not None

    @torch.no_grad()
    def prepare(self, rgb: np.ndarray) -> Prepared:
        """uint8 (H, W, 3), colour or gray: the photo kept as uint8 and L at the working size."""
        rgb_u8 = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(self.device)
        lightness = torch.empty(1, 1, *rgb.shape[:2], device=self.device)
        for rows in self._bands(rgb.shape[:2]):
            lightness[..., rows, :] = uint8_to_lab(rgb_u8[..., rows, :])[:, :1]
        l_norm = (lightness - L_CENTER) / L_NORM  # as normalize_lab
        del lightness
        l_small = F.interpolate(l_norm, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                antialias=True)
        return Prepared(rgb_u8, l_small, self.embedder(rgb_u8) if self.embedder is not None else None)

    @torch.no_grad()
    def predict(self, prepared: Prepared, hints: list[Hint] | None = None) -> Tensor:
        """Encode hints and run the network: its raw output (1, C, h, w) at the working size."""
        hint_ab = hint_mask = None
        if hints:
            if not self.takes_hints:
                raise ValueError("this checkpoint was trained without hints (hints.enabled=false), so it cannot "
                                 "use a hints file; train one with experiment=hints_unet")
            hint_ab, hint_mask = encode_hints(hints, prepared.shape, (self.size, self.size), DEFAULT_HINT_PATCH,
                                              self.device)
        return self.model(prepared.l_small, prepared.embedding, hint_ab, hint_mask)

    @torch.no_grad()
    def render(self, prepared: Prepared, out: Tensor, gamma: float = 1.0, saturation: float = 1.0) -> Result:
        """Decode the network's output, upsample ab and recombine it with the photo's full-resolution L.
        Colour conversions run on bands of rows (``band_pixels`` at a time), as in ``prepare``: tens of
        bytes per pixel of scratch memory, not the ~200 of whole-image conversions."""
        from colorlab.palette import palette_pixels

        check_enhancement(gamma, saturation)
        ab = self.model.decode(out) if self.temperature is None else self.model.decode_at(out, self.temperature)
        ab = F.interpolate(ab.float(), size=prepared.shape, mode="bilinear", align_corners=False) * AB_NORM
        lab = torch.empty(1, 3, *prepared.shape, device=ab.device)  # (1, 3, H, W)
        lab[:, 1:] = ab
        del ab
        rgb = np.empty((*prepared.shape, 3), dtype=np.uint8)
        for rows in self._bands(prepared.shape):
            lab[..., :1, rows, :] = uint8_to_lab(prepared.rgb[..., rows, :])[:, :1]
            rgb[rows] = enhance(lab[..., rows, :], gamma, saturation)
        return Result(rgb, out, palette_pixels(lab[0]))

    def _bands(self, shape: tuple[int, int]) -> list[slice]:
        """Slices of rows of an image of ``shape`` (H, W), about ``band_pixels`` pixels each."""
        step = max(1, self.band_pixels // shape[1])
        return [slice(top, top + step) for top in range(0, shape[0], step)]

    def run(self, prepared: Prepared, hints: list[Hint] | None = None, gamma: float = 1.0,
            saturation: float = 1.0) -> Result:
        """predict, then render."""
        return self.render(prepared, self.predict(prepared, hints), gamma, saturation)

    def distribution_at(self, out: Tensor, shape: tuple[int, int], x: float, y: float
                        ) -> tuple[Tensor, Tensor] | None:
        """The predicted ab distribution (probs (Q,), centres (Q, 2)) from output ``out`` at pixel (x, y) of
        an input of ``shape`` (H, W), or None."""
        if not self.model.predicts_distribution:
            return None
        probs, centers = self.model.ab_distribution(out)
        (height, width), (h, w) = shape, probs.shape[-2:]
        return probs[0, :, min(int(y * h / height), h - 1), min(int(x * w / width), w - 1)], centers

    def uncertainty(self, out: Tensor, shape: tuple[int, int]) -> Tensor | None:
        """Per-pixel entropy of the predicted distribution, upsampled to the input's ``shape`` (H, W): (H, W)
        in nats, or None."""
        if not self.model.predicts_distribution:
            return None
        entropy = self.model.pixel_entropy(out)[:, None].float()
        return F.interpolate(entropy, size=shape, mode="bilinear", align_corners=False)[0, 0]


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


def colorize(checkpoint: Path, source: Path, out: Path, temperature: float | None = None, size: int | None = None,
             hints: Path | None = None, gamma: float = 1.0, saturation: float = 1.0, palette: int = 0,
             palette_at: tuple[float, float] | None = None) -> tuple[list[Path], Counter]:
    """Colourise every image under ``source`` into ``out``; returns (written files, skipped reasons)."""
    from colorlab.models import load_colorizer

    if (hints is not None or palette_at is not None) and source.is_dir():
        raise ValueError("hints and palette_at are points on one image: give input=FILE, not a directory")
    if palette < 0 or (palette_at is not None and palette == 0):
        raise ValueError(f"palette must be a number of colours >= 1 (palette_at needs it). Got {palette}")
    check_enhancement(gamma, saturation)  # bad values stop here, before any work
    if temperature is not None and not (math.isfinite(temperature) and 0 <= temperature <= 100):
        raise ValueError(f"temperature must be a number in [0, 100] (0 decodes the mode). Got {temperature}")
    if palette > 64:
        raise ValueError(f"palette must be at most 64 colours. Got {palette}")
    if size is not None and not 8 <= size <= 2048:
        raise ValueError(f"size must be in 8..2048 pixels. Got {size}")
    if palette_at is not None and not all(math.isfinite(v) for v in palette_at):
        raise ValueError(f"palette_at must be finite numbers. Got {palette_at}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={out} is an existing file; give a directory")
    model = load_colorizer(checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    colorizer = PhotoColorizer(model, size, temperature)
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
        result = colorizer.run(prepared, points, gamma, saturation)
        out.mkdir(parents=True, exist_ok=True)  # only once there is something to write
        handle, target = create_free(out / f"{path.stem}.png")
        with handle:
            Image.fromarray(result.rgb).save(handle, format="PNG")
        written.append(target)
        if palette:
            written += write_palette_files(colorizer, prepared, result, palette, palette_at, out, target.stem)
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
        number = {k: float(options[k]) for k in ("temperature", "gamma", "saturation") if k in options}
        written, skipped = colorize(
            Path(options["ckpt"]), Path(options["input"]), Path(options["out"]), number.get("temperature"),
            int(options["size"]) if "size" in options else None,
            Path(options["hints"]) if "hints" in options else None, number.get("gamma", 1.0),
            number.get("saturation", 1.0), int(options.get("palette", 0)),
            parse_point(options["palette_at"]) if "palette_at" in options else None)
    except (FileNotFoundError, ValueError) as e:  # ConfigError and HintsError are ValueErrors
        return error("colorize", e)
    print(f"{len(written)} files written to {options['out']}")
    if skipped:
        print(summarize_skips(skipped, options["input"]))
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
