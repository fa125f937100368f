"""Write litdata shards of a folder of images: ``python -m colorlab.prepare data.root=DIR out=DIR [size=256]``.

Options: ``data.val_root=DIR`` or ``data.val_fraction=0.1`` (the same split as data=folder),
``size`` (shorter side of the stored images), ``workers`` (processes). Unreadable and grayscale
files are skipped and counted. Train with ``data=shards data.path=DIR``.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image

from colorlab.cli import error
from colorlab.config import key_value_options, usage_exit_code
from colorlab.data.photos import folder_splits, resize_shorter_side
from colorlab.io import UnreadableImage, read_rgb


def encode(task: tuple[int, str, int]):
    """(item id, path, size) -> one sample: JPEG bytes of the resized photo; nothing if unreadable."""
    item, path, size = task
    try:
        rgb = read_rgb(path, min_side=size)
    except UnreadableImage as e:
        print(f"skipped: {e}", file=sys.stderr)
        return
    buffer = io.BytesIO()
    Image.fromarray(resize_shorter_side(rgb, size)).save(buffer, format="JPEG", quality=95)
    yield {"jpeg": buffer.getvalue(), "item": item}


def prepare(root: str, out: Path, size: int = 256, val_root: str | None = None, val_fraction: float = 0.1,
            workers: int = 1) -> dict[str, int]:
    """Shards of root's train and val splits under out/train and out/val; returns images per split."""
    import litdata

    train, val = folder_splits(root, size=min(size, 32), seed=0, val_root=val_root, val_fraction=val_fraction)
    counts = {}
    for split, dataset in (("train", train), ("val", val)):
        tasks = [(i, str(p), size) for i, p in enumerate(dataset.paths)]
        litdata.optimize(fn=encode, inputs=tasks, output_dir=str(out / split), chunk_bytes="64MB",
                         num_workers=workers, mode="overwrite")
        counts[split] = len(tasks)
    return counts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        options = key_value_options(argv, ("data.root", "out", "size", "data.val_root", "data.val_fraction",
                                           "workers"), required=("data.root", "out"))
        counts = prepare(options["data.root"], Path(options["out"]), int(options.get("size", 256)),
                         options.get("data.val_root"), float(options.get("data.val_fraction", 0.1)),
                         int(options.get("workers", 1)))
    except (ValueError, FileNotFoundError) as e:
        return error("prepare", e)
    print(f"shards written to {options['out']}: {counts['train']} train, {counts['val']} val images; "
          f"train with data=shards data.path={options['out']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
