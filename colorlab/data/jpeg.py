"""``data.decode=gpu``: JPEGs decoded as a batch on the training device (nvJPEG through torchvision).

Workers then only read a file's header and bytes and draw its crop (``crop_box``, from the same random
numbers and the same image size as the CPU path, its reduced-scale draft size included, so the crop
boxes are identical); ``decode_batch`` decodes, resizes, crops and flips on the device before the batch
is transferred. Files nvJPEG should not get (not a JPEG, CMYK, an EXIF
rotation) are decoded by the worker as with ``data.decode=cpu``; a file that fails on the device is
decoded once more with PIL, and one that fails there too is dropped from the batch and counted.

Resampling differs from the CPU path (torch's antialiased bicubic on the full-size image, not PIL's
bicubic after a reduced-scale DCT decode): tests/test_jpeg_decode.py states the tolerance.

On CUDA, torchvision allocates the decoded images on the current stream but writes them on its own
(pytorch/vision#9606): memory the training step's queued kernels still use could be handed to it. The
decode therefore runs with a side stream current, whose memory pool holds only what was freed there, and
the training stream waits for it on the device. torch hands out side streams from a shared pool of 32: the
side stream is drained first (cheap: nothing else is queued on it in colorlab), in case another library
shares it.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from colorlab.io import ORIENTATION_TAG, UnreadableImage, read_rgb_bytes

DECODES = ("cpu", "gpu")


class CropBox(NamedTuple):
    """A crop of a photo resized to ``height`` x ``width``: its top-left corner, and whether it is mirrored."""
    height: int
    width: int
    top: int
    left: int
    flip: bool


def device_decodable(image) -> bool:
    """Whether a (header-only) PIL image can be left to nvJPEG: a 3-channel JPEG that needs no EXIF rotation."""
    if image.format != "JPEG" or image.mode != "RGB":
        return False
    try:
        return image.getexif().get(ORIENTATION_TAG, 1) == 1
    except (OSError, ValueError, SyntaxError):  # a broken EXIF block: PIL's decode handles the file
        return False


def encoded_item(data: bytes, box: CropBox, size: int, file: int) -> dict:
    """An item whose pixels come later: ``jpeg`` the bytes (N,) uint8 of file number ``file``, ``box`` (5,)
    int64 and a placeholder ``rgb`` (3, size, size) uint8 that decode_batch fills."""
    return {"rgb": torch.zeros(3, size, size, dtype=torch.uint8),
            "jpeg": torch.frombuffer(bytearray(data), dtype=torch.uint8), "box": torch.tensor(box), "file": file}


def decoded_item(rgb: torch.Tensor) -> dict:
    """An item the worker decoded itself, in the same schema (empty ``jpeg``; ``box`` and ``file`` unused)."""
    return {"rgb": rgb, "jpeg": torch.empty(0, dtype=torch.uint8), "box": torch.full((5,), -1), "file": -1}


def collate(items: list[dict]) -> dict:
    """default_collate, except ``jpeg``: a list of B byte tensors of different lengths."""
    encoded = [item.pop("jpeg") for item in items]
    batch = default_collate(items)
    batch["jpeg"] = encoded
    return batch


def _decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
    """JPEG bytes -> uint8 (3, H, W) on ``device`` each; None where neither nvJPEG nor PIL can decode it."""
    from torchvision.io import ImageReadMode, decode_jpeg

    def one(encoded):
        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:  # nvJPEG (or libjpeg on the CPU) refused it: PIL reads more oddities
            try:
                return torch.from_numpy(read_rgb_bytes(encoded.numpy().tobytes())).permute(2, 0, 1).to(device)
            except UnreadableImage:
                return None

    with warnings.catch_warnings(), _decode_stream(device):
        warnings.filterwarnings("ignore", message=".*TorchCodec.*")  # torchvision 0.29 deprecates its decoders
        try:
            return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))  # one batched call
        except RuntimeError:  # one bad file fails the whole call: find it
            if device.type == "cuda":  # rare: let the failed call's writes finish before its memory is reused
                torch.cuda.synchronize(device)
            return [one(encoded) for encoded in data]


_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


@contextmanager
def _decode_stream(device: torch.device):
    """CUDA: run the block with the side stream current (see the module docstring); the stream that was
    current then waits for it, and owns the tensors made in the block (``_own``). Elsewhere: nothing."""
    if device.type != "cuda":
        yield
        return
    training = torch.cuda.current_stream(device)
    stream = _STREAMS.get(device)
    if stream is None:
        stream = _STREAMS[device] = torch.cuda.Stream(device)
    stream.synchronize()  # see the module docstring
    with torch.cuda.stream(stream):
        yield
    training.wait_stream(stream)  # on the device: the step's kernels read the images after they are written


def _own(images: list[torch.Tensor | None], device: torch.device) -> None:
    """Tell the caching allocator that the training stream uses the decoded images (made on the decode stream),
    so their memory is not reused before that stream is done with them."""
    if device.type == "cuda":
        training = torch.cuda.current_stream(device)
        for image in images:
            if image is not None:
                image.record_stream(training)


def resize_crop(rgb: torch.Tensor, box: CropBox, size: int) -> torch.Tensor:
    """uint8 (3, H, W) on any device -> uint8 (3, size, size): resized to (box.height, box.width) with
    antialiased bicubic (PIL's kernel), cropped at (box.top, box.left), mirrored if box.flip."""
    resized = F.interpolate(rgb[None].float(), size=(box.height, box.width), mode="bicubic", antialias=True,
                            align_corners=False)[0]
    patch = resized[:, box.top:box.top + size, box.left:box.left + size].round().clamp(0, 255).to(torch.uint8)
    return patch.flip(-1) if box.flip else patch


def decode_batch(batch: dict, device: torch.device | str, paths: list | None = None) -> tuple[dict, list[int]]:
    """A collated batch of ``encoded_item``/``decoded_item`` -> the same batch without ``jpeg``, ``box`` and
    ``file``, with ``rgb`` (B', 3, S, S) uint8 on ``device``, and the numbers of the files dropped because
    neither nvJPEG nor PIL could decode them (B' = B - len(dropped)), with a warning naming them (by
    ``paths[number]`` when given). A batch without ``jpeg`` is returned as it is."""
    encoded = batch.pop("jpeg", None)
    boxes, files = batch.pop("box", None), batch.pop("file", None)
    if encoded is None:
        return batch, []
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    rgb = batch["rgb"].to(device, non_blocking=True)
    size = rgb.shape[-1]
    pending = [i for i, data in enumerate(encoded) if data.numel()]
    decoded = _decode([encoded[i] for i in pending], device) if pending else []
    _own(decoded, device)
    keep = torch.ones(len(encoded), dtype=torch.bool)
    for i, image in zip(pending, decoded, strict=True):
        if image is None:
            keep[i] = False
        else:
            rgb[i] = resize_crop(image, CropBox(*boxes[i].tolist()), size)
    batch["rgb"] = rgb
    if keep.all():
        return batch, []
    dropped = files[~keep].tolist()
    named = ", ".join(str(paths[i]) if paths is not None else f"file {i}" for i in dropped)
    warnings.warn(f"skipped while decoding on the {device.type}: {named} (not decodable JPEG data)", stacklevel=2)
    on_device = keep.to(device)
    return {k: v[on_device if v.device == device else keep] for k, v in batch.items()}, dropped
