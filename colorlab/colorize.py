"""Colourise photos with any trained checkpoint:
``python -m colorlab.colorize ckpt=PATH input=FILE_OR_DIR out=DIR [temperature=T] [size=N]``.

The network sees L at its working size (``size``, default the training crop ``data.size``); the
predicted ab is upsampled and recombined with the full-resolution L, so the output has the input's
exact size and detail. Colour or gray JPEG/PNG/WebP, RGBA, palette and 16-bit PNG, EXIF-rotated
photos are accepted; unreadable files are skipped and counted. Outputs are PNGs in ``out``; an
existing file (an input included) is never written over: the name gets a -1, -2, ... suffix.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from colorlab.color import AB_NORM, lab_to_uint8, normalize_lab, uint8_to_lab
from colorlab.config import key_value_options, usage_exit_code
from colorlab.io import IMAGE_SUFFIXES, UnreadableImage, read_rgb, summarize_skips

OPTIONS = ("ckpt", "input", "out", "temperature", "size")


@torch.no_grad()
def colorize_array(model, rgb: np.ndarray, size: int, temperature: float | None = None, embedder=None) -> np.ndarray:
    """uint8 (H, W, 3) (colour or gray) -> uint8 (H, W, 3): the model's ab on the input's own L."""
    device = next(model.parameters()).device
    rgb_u8 = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(device)
    lab = uint8_to_lab(rgb_u8)  # (1, 3, H, W)
    l_norm, _ = normalize_lab(lab)
    l_small = F.interpolate(l_norm, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    embedding = embedder(rgb_u8) if embedder is not None else None
    out = model(l_small, embedding)
    ab = model.decode(out) if temperature is None else model.decode_at(out, temperature)
    ab = F.interpolate(ab.float(), size=lab.shape[-2:], mode="bilinear", align_corners=False) * AB_NORM
    return lab_to_uint8(torch.cat([lab[:, :1], ab], dim=1))[0].permute(1, 2, 0).cpu().numpy()


def free_path(path: Path) -> Path:
    """path, or path with -1, -2, ... before the suffix when it exists: nothing is written over."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def list_inputs(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    raise FileNotFoundError(f"input={source} is neither a file nor a directory")


def colorize(checkpoint: Path, source: Path, out: Path, temperature: float | None = None,
             size: int | None = None) -> tuple[list[Path], Counter]:
    """Colourise every image under ``source`` into ``out``; returns (written files, skipped reasons)."""
    from colorlab.models import load_colorizer
    from colorlab.models.bins import BinsColorizer

    model = load_colorizer(checkpoint, "cuda" if torch.cuda.is_available() else "cpu")
    if temperature is not None and not isinstance(model, BinsColorizer):
        raise ValueError(f"temperature applies to bin formulations; {checkpoint} is {model.config['model']['name']}")
    size = size or model.config["data"]["size"]
    multiple = model.net.size_multiple
    if size % multiple:
        raise ValueError(f"size must be a multiple of {multiple} for this network. Got {size}")
    embedder = None
    if model.config["embed"]["enabled"]:
        from colorlab.embed import GlobalEmbedder

        e = model.config["embed"]
        embedder = GlobalEmbedder(e["weights"], e["output"], e["size"], model.config["seed"])
        embedder.to(next(model.parameters()).device)
    inputs = list_inputs(source)
    out.mkdir(parents=True, exist_ok=True)
    written, skipped = [], Counter()
    for path in tqdm(inputs, desc="colorize", unit="image", disable=None if len(inputs) > 1 else True):
        try:
            rgb = read_rgb(path)
        except UnreadableImage as e:
            skipped[e.reason] += 1
            print(f"skipped: {e}", file=sys.stderr)
            continue
        target = free_path(out / f"{path.stem}.png")
        Image.fromarray(colorize_array(model, rgb, size, temperature, embedder)).save(target)
        written.append(target)
    return written, skipped


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        options = key_value_options(argv, OPTIONS, required=("ckpt", "input", "out"))
        written, skipped = colorize(Path(options["ckpt"]), Path(options["input"]), Path(options["out"]),
                                    float(options["temperature"]) if "temperature" in options else None,
                                    int(options["size"]) if "size" in options else None)
    except (FileNotFoundError, ValueError) as e:  # ConfigError is a ValueError
        print(f"colorlab.colorize: error: {e}", file=sys.stderr)
        return 2
    print(f"{len(written)} images written to {options['out']}")
    if skipped:
        print(summarize_skips(skipped, options["input"]))
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
