"""Photograph sources: scikit-image's bundled photos (``data=samples``) and any folder (``data=folder``).

Workers decode and crop on the CPU and return uint8 RGB; colour conversion happens later,
on the training device. Training items are random crops with horizontal flips, drawn from (seed,
epoch, index): the same for any number of workers or DDP ranks, and after a resume; validation
items are deterministic (per index) so that metrics and sample grids are comparable.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from colorlab.data.files import Unusable, crop_array, existing_dir, scan_files, shorter_side_size, split_by_file
from colorlab.data.jpeg import DECODES, CropBox, decoded_item, device_decodable, encoded_item
from colorlab.data.jpeg import collate as jpeg_collate
from colorlab.io import GRAY_MODES, IMAGE_SUFFIXES, UnreadableImage, draft_jpeg, open_image, read_rgb, summarize_skips

# Colour photographs that ship inside scikit-image (no download needed).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle")


def resize_shorter_side(rgb: np.ndarray, side: int) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H', W', 3) with min(H', W') == side, aspect kept."""
    h, w = rgb.shape[:2]
    return np.array(Image.fromarray(rgb).resize(shorter_side_size(w, h, side), Image.BICUBIC))


def _crop_position(h: int, w: int, size: int, rng: np.random.Generator | None) -> tuple[int, int, bool]:
    if rng is None:
        return (h - size) // 2, (w - size) // 2, False
    top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
    return top, left, bool(rng.random() < 0.5)


def _draw(index: int | tuple[int, int]) -> tuple[int, int | None]:
    """A sampler's index: (index, epoch) from EpochShuffle for datasets with ``epoch_draws``, else a plain index."""
    return index if isinstance(index, tuple) else (index, None)


def _item_rng(train: bool, seed: int, index: int, epoch: int | None = None) -> np.random.Generator:
    """Validation: a function of (seed, index). Training: of (seed, epoch, index) when the sampler says which
    epoch (EpochShuffle's draws: the same crops for any number of workers or ranks, and after a resume);
    otherwise torch's RNG, which Lightning seeds per worker (litdata shards)."""
    if not train:
        return np.random.default_rng([seed, index])
    if epoch is not None:
        return np.random.default_rng([seed, index, epoch, 1])  # 4 words: never a validation stream
    return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))


def crop_box(width: int, height: int, size: int, scale: int, train: bool, seed: int, index: int,
             epoch: int | None = None) -> CropBox:
    """Where crop_for_split cuts a photo of ``width`` x ``height``, drawn from the same random numbers: the
    size the photo is resized to, the crop's top-left corner in it, and the flip."""
    rng = _item_rng(train, seed, index, epoch)
    side = int(rng.integers(size, scale + 1)) if train else scale
    resized_w, resized_h = shorter_side_size(width, height, side)
    top, left, flip = _crop_position(resized_h, resized_w, size, rng if train else None)
    return CropBox(resized_h, resized_w, top, left, flip)


def crop_for_split(rgb: np.ndarray, size: int, scale: int, train: bool, seed: int, index: int,
                   epoch: int | None = None) -> torch.Tensor:
    """uint8 (H, W, 3) photo -> uint8 (3, size, size). Training: shorter side resized to a random value
    in [size, scale], random crop, random flip. Validation: shorter side ``scale``, centre crop."""
    box = crop_box(rgb.shape[1], rgb.shape[0], size, scale, train, seed, index, epoch)
    resized = np.array(Image.fromarray(rgb).resize((box.width, box.height), Image.BICUBIC))
    return torch.from_numpy(crop_array(resized, size, box.top, box.left, box.flip)).permute(2, 0, 1).contiguous()


class PhotoCrops(Dataset):
    """Crops of photographs. ``load(i)`` returns photo i as uint8 (H, W, 3).

    Training: ``length`` random crops per epoch, photo ``index % n``, resized so the shorter side
    is a random value in [size, scale] before cropping. Validation: each photo once (or
    ``length`` crops cycling over them), resized to ``scale`` and cropped deterministically.
    """

    def __init__(self, load: Callable[[int], np.ndarray], n: int, size: int, scale: int | None,
                 train: bool, length: int | None = None, seed: int = 0):
        scale = scale or round(size * 8 / 7)  # 256 -> 292, the usual 224/256 margin
        if scale < size:
            raise ValueError(f"scale (shorter side before cropping) must be >= size. Got {scale} < {size}")
        self.load, self.n, self.size, self.scale = load, n, size, scale
        self.train, self.length, self.seed = train, length or n, seed

    def __len__(self) -> int:
        return self.length

    @property
    def n_items(self) -> int:
        """Distinct source photos (for per-image caches such as global embeddings)."""
        return self.n

    def whole_image(self, item: int) -> torch.Tensor:
        """The uncropped photo ``item``, uint8 (3, H, W)."""
        return torch.from_numpy(np.ascontiguousarray(self.load(item))).permute(2, 0, 1)

    epoch_draws = True  # EpochShuffle gives training items as (index, epoch): crops drawn from those

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        index, epoch = _draw(index)
        item = index % self.n
        rgb = crop_for_split(self.load(item), self.size, self.scale, self.train, self.seed, index, epoch)
        return {"rgb": rgb, "index": index, "item": item}


def samples_splits(size: int, scale: int, seed: int, train_size: int, val_size: int,
                   val_photos: list[str]):
    """scikit-image's photos, split by photo: ``val_photos`` are held out."""
    import skimage.data

    unknown = sorted(set(val_photos) - set(SKIMAGE_PHOTOS))
    if unknown or not val_photos or set(val_photos) == set(SKIMAGE_PHOTOS):
        raise ValueError(f"data.val_photos must be a non-empty proper subset of {list(SKIMAGE_PHOTOS)}. "
                         f"Got {list(val_photos)}")

    def loader(names):
        def load(i):
            photo = getattr(skimage.data, names[i])()
            return photo[0] if isinstance(photo, tuple) else photo  # stereo pairs: left view
        return load

    train_names = [n for n in SKIMAGE_PHOTOS if n not in val_photos]
    val_names = list(val_photos)
    train = PhotoCrops(loader(train_names), len(train_names), size, scale, True, train_size, seed)
    val = PhotoCrops(loader(val_names), len(val_names), size, scale, False, val_size, seed)
    return train, val


def _colour_image(path: Path) -> Path:
    try:
        with open_image(path) as image:  # the header only: fast on large folders
            mode = image.mode
    except UnreadableImage as e:
        raise Unusable(e.reason) from e
    if mode in GRAY_MODES:  # no colour to learn
        raise Unusable("grayscale")
    return path


def scan_folder(root: Path) -> tuple[list[Path], Counter]:
    """All usable colour images under root (sorted), and a Counter of skipped files by reason: missing,
    empty, non-image, bomb-sized and grayscale files, told from their headers."""
    return scan_files(root, IMAGE_SUFFIXES, _colour_image, "images", "not an image suffix")


class FolderImages(PhotoCrops):
    """Images from a list of paths; a file that fails to decode is replaced by the next one.

    ``decode="gpu"``: items carry a JPEG's bytes and its crop box instead of pixels (colorlab.data.jpeg);
    the DataModule decodes them on the training device. Other files are decoded here as with "cpu".
    """

    def __init__(self, paths: list[Path], size: int, scale: int | None, train: bool, seed: int = 0,
                 skipped: Counter | None = None, length: int | None = None, labels: list[int] | None = None,
                 decode: str = "cpu"):
        super().__init__(self._read, len(paths), size, scale, train, length or len(paths), seed)
        if decode not in DECODES:
            raise ValueError(f"data.decode must be one of {', '.join(DECODES)}. Got {decode!r}")
        self.paths, self._failed, self.labels, self.decode = paths, -1, labels, decode
        self.reduced_decode = True  # draft-mode JPEG decoding (False: always decode at full size)
        self.skipped = skipped or Counter()  # files left out when the folder was scanned, by reason
        self.collate = jpeg_collate if decode == "gpu" else None  # the DataLoader's collate_fn

    def _read(self, i: int) -> np.ndarray:
        for index in self._candidates(i):
            try:
                # shorter side >= scale is all the crops need: large JPEGs decode at 1/2, 1/4 or 1/8
                return read_rgb(self.paths[index], min_side=self.scale if self.reduced_decode else None)
            except UnreadableImage as e:  # headers looked fine but the pixel data did not
                self._skip(e, index)
        raise RuntimeError("no image in the folder could be decoded")

    def _candidates(self, i: int):
        """File i, then the next ones (a file that fails is replaced by the next)."""
        return ((i + offset) % self.n for offset in range(self.n))

    def _skip(self, error: UnreadableImage, index: int) -> None:
        warnings.warn(f"skipped while decoding: {error}", stacklevel=3)
        self._failed = index if self._failed < 0 else self._failed

    def _encoded(self, index: int, epoch: int | None) -> dict:
        """``jpeg.encoded_item`` when file ``index`` (or the next readable one) can be decoded on the device,
        otherwise ``jpeg.decoded_item`` with the crop made here, as for data.decode=cpu."""
        item = index % self.n
        for candidate in self._candidates(item):
            path = self.paths[candidate]
            try:
                with open_image(path) as image:  # the header only
                    if not device_decodable(image):
                        rgb = crop_for_split(self._read(candidate), self.size, self.scale, self.train, self.seed,
                                             index, epoch)
                        return decoded_item(rgb)
                    if self.reduced_decode:  # the size the CPU path decodes at: its crop box, exactly
                        draft_jpeg(image, self.scale)
                    width, height = image.size
                data = path.read_bytes()
            except (UnreadableImage, OSError) as e:
                self._skip(e if isinstance(e, UnreadableImage) else UnreadableImage(path, "unreadable", str(e)),
                           candidate)
                continue
            box = crop_box(width, height, self.size, self.scale, self.train, self.seed, index, epoch)
            return encoded_item(data, box, self.size, candidate)
        raise RuntimeError("no image in the folder could be read")

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        self._failed = -1
        if self.decode == "gpu":
            plain, epoch = _draw(index)
            item = {**self._encoded(plain, epoch), "index": plain, "item": plain % self.n}
        else:
            item = super().__getitem__(index)
        # which file failed to decode for this item (-1: none); the DataModule counts them
        item = {**item, "decode_failed": self._failed}
        return item if self.labels is None else {**item, "label": self.labels[item["item"]]}


def class_labels(paths: list[Path], roots: list[Path]) -> tuple[list[int], list[str]]:
    """ImageNet's class-folder layout (root/<class>/<image>): each path's class index in the sorted class
    names of all ``roots`` (with ImageNet's 1000 synset folders, torchvision's class index)."""
    def class_of(path: Path) -> str:
        root = next(r for r in roots if path.is_relative_to(r))
        parts = path.relative_to(root).parts
        if len(parts) < 2:
            raise ValueError(f"data.labels=true needs root/<class>/<image>; {path} is not in a class folder")
        return parts[0]
    classes = sorted({class_of(p) for p in paths})
    index = {name: i for i, name in enumerate(classes)}
    return [index[class_of(p)] for p in paths], classes


def folder_splits(root: str, size: int, seed: int, scale: int | None = None, val_root: str | None = None,
                  val_fraction: float = 0.1, train_size: int | None = None, labels: bool = False,
                  decode: str = "cpu"):
    """Train/val datasets from a directory tree (and an optional separate validation tree).
    ``train_size``: random crops per epoch, cycling over the training files (None: one per file).
    ``labels``: items also carry ``label``, the index of their class folder (see class_labels).
    ``decode``: "cpu" (workers decode with PIL) or "gpu" (JPEGs decoded on the training device, data.jpeg)."""
    check_train_size(train_size)
    root_path = existing_dir(root, "data.root", "images", "/data/photos")
    paths, skipped = scan_folder(root_path)
    if val_root is not None:
        val_paths, val_skipped = scan_folder(existing_dir(val_root, "data.val_root", "images", "/data/photos"))
        skipped += val_skipped
        train_paths = paths
    else:
        train_paths, val_paths = split_by_file(paths, lambda path: path, root_path, val_fraction)
    if skipped:
        warnings.warn(summarize_skips(skipped, root), stacklevel=2)
    if not train_paths or not val_paths:
        raise ValueError(f"data.root={root} holds {len(paths)} usable colour images "
                         f"({sum(skipped.values())} skipped); need at least one for training and one "
                         f"for validation. Supported suffixes: {sorted(IMAGE_SUFFIXES)}")
    train_labels = val_labels = None
    if labels:
        roots = [root_path] + ([Path(val_root).expanduser()] if val_root is not None else [])
        all_labels, _ = class_labels(train_paths + val_paths, roots)
        train_labels, val_labels = all_labels[: len(train_paths)], all_labels[len(train_paths):]
    return (FolderImages(train_paths, size, scale, True, seed, skipped, train_size, train_labels, decode),
            FolderImages(val_paths, size, scale, False, seed, labels=val_labels, decode=decode))


def check_train_size(train_size: int | None) -> None:
    if train_size is not None and (not isinstance(train_size, int) or train_size < 1):
        raise ValueError(f"data.train_size must be a number of crops per epoch >= 1, or null for one per file. "
                         f"Got {train_size!r}")
