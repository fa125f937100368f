"""data.decode=gpu: JPEGs decoded as a batch on the training device, against PIL's decode with the same crops.

On the CPU the device path runs torchvision's libjpeg decoder; tests/test_gpu.py runs it on nvJPEG.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from colorlab.data import ColorDataModule
from colorlab.data.datamodule import DeviceBatches
from colorlab.data.jpeg import CropBox, decode_batch
from colorlab.data.photos import FolderImages, crop_box, crop_for_split
from colorlab.io import read_rgb
from tests.test_draft import photo_like, save_jpeg

SIZE = 64  # data.scale is then 73: these photos decode at 1/4 (draft) on the CPU path, the last is upsampled


def jpeg_folder(root, sizes=((500, 375), (375, 500), (500, 333), (60, 50))):
    """ImageNet-like JPEGs (quality 90), and one smaller than data.scale."""
    root.mkdir(exist_ok=True)
    return [save_jpeg(root / f"{i}.jpg", photo_like(w, h, seed=i), quality=90) for i, (w, h) in enumerate(sizes)]


def pil_and_device(paths, train: bool, device="cpu", reduced=False, n=8):
    """The same items through PIL in the workers and through decode_batch on ``device``; uint8 (n, 3, SIZE,
    SIZE) each, and the device path's boxes. ``reduced``: both at their defaults (PIL decodes large JPEGs at a
    reduced DCT scale); otherwise PIL decodes at full size. Training crops come from torch's RNG: seeded alike."""
    pil = FolderImages(paths, SIZE, None, train, seed=3)
    encoded = FolderImages(paths, SIZE, None, train, seed=3, decode="gpu")
    pil.reduced_decode = encoded.reduced_decode = reduced
    torch.manual_seed(7)
    reference = torch.stack([pil[i]["rgb"] for i in range(n)])
    torch.manual_seed(7)
    items = [encoded[i] for i in range(n)]
    boxes = [CropBox(*item["box"].tolist()) for item in items]
    batch, dropped = decode_batch(encoded.collate(items), device)
    assert dropped == [] and not {"jpeg", "box", "file"} & set(batch)
    return reference, batch["rgb"].cpu(), boxes


@pytest.mark.parametrize("train", [False, True], ids=["validation", "training"])
def test_device_decoding_gives_pils_crops_up_to_resampling(tmp_path, train):
    reference, decoded, _ = pil_and_device(jpeg_folder(tmp_path / "photos"), train)
    diff = (reference.float() - decoded.float()).abs()
    # stated tolerance, in levels of 255 (libjpeg and torch's antialiased bicubic against PIL's full-size decode
    # and bicubic): mean < 0.5, 99th percentile <= 2, max <= 12. Measured on these photos over 4 seeds: mean
    # 0.09-0.10, p99 1, max 1; on scikit-image's sharper photos at 500 x 375: mean 0.09-0.10, max 4-6
    assert diff.mean() < 0.5, diff.mean()
    assert diff.flatten().quantile(0.99) <= 2
    assert diff.max() <= 12
    # not vacuous: the same crops 4 px off, or unflipped, are far outside it
    assert (reference.float() - decoded.roll(4, dims=-1).float()).abs().mean() > 2
    if train:
        assert (reference.float() - decoded.flip(-1).float()).abs().mean() > 2


@pytest.mark.parametrize("train", [False, True], ids=["validation", "training"])
def test_the_crop_boxes_are_the_cpu_paths_at_its_default_reduced_scale(tmp_path, train):
    """By default the CPU path decodes large JPEGs at 1/2, 1/4 or 1/8 and resizes that: the device path takes its
    box from the same reduced size (a box from the full size is 1 px off in about a quarter of cases)."""
    paths = jpeg_folder(tmp_path / "photos")
    reference, decoded, boxes = pil_and_device(paths, train, reduced=True)
    for i, box in enumerate(boxes):
        drafted = read_rgb(paths[i % len(paths)], min_side=73)  # what the CPU path resized, decoded here
        torch.manual_seed(7)
        for _ in range(i):  # the draws of the items before this one
            crop_box(1, 1, 1, 1, train, 3, 0)
        assert box == crop_box(drafted.shape[1], drafted.shape[0], SIZE, 73, train, 3, i)
    # the pixels differ by the CPU path's reduced-scale decode (DCT scaling, then PIL's bicubic) against torch's
    # antialiased bicubic from full size: mean < 3 levels (measured 0.59-0.61 here over 4 seeds; 1.8-2.1 on
    # scikit-image's sharper photos at 500 x 375, 64 and 128 px)
    assert (reference.float() - decoded.float()).abs().mean() < 3


def test_files_nvjpeg_should_not_get_are_decoded_by_the_workers_as_before(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    rgb = photo_like(300, 200, seed=1)
    Image.fromarray(rgb).save(root / "a.png")
    Image.fromarray(rgb).convert("CMYK").save(root / "b.jpg", quality=90)
    rotated = Image.fromarray(rgb)
    exif = rotated.getexif()
    exif[0x0112] = 6  # EXIF: rotate 90 degrees clockwise to display
    rotated.save(root / "c.jpg", quality=90, exif=exif)
    paths = sorted(root.iterdir())
    cpu = FolderImages(paths, SIZE, None, train=False)
    gpu = FolderImages(paths, SIZE, None, train=False, decode="gpu")
    items = [gpu[i] for i in range(len(paths))]
    assert all(item["jpeg"].numel() == 0 for item in items)  # none left to the device
    batch, _ = decode_batch(gpu.collate(items), "cpu")
    expected = torch.stack([cpu[i]["rgb"] for i in range(len(paths))])
    assert torch.equal(batch["rgb"], expected)
    assert batch["rgb"][2].float().std() > 10  # the rotated photo really is there


class Training:
    """What the DataModule's transfer hooks read of a Trainer: training mode, and the device."""
    training = True
    strategy = type("Strategy", (), {"root_device": torch.device("cpu")})()


def test_a_file_that_fails_on_the_device_is_dropped_and_counted_by_the_datamodule(tmp_path):
    paths = jpeg_folder(tmp_path / "train")
    good = paths[0].read_bytes()
    paths[2].write_bytes(good[:len(good) // 2])  # the header reads, the pixel data is cut off
    jpeg_folder(tmp_path / "val", sizes=((300, 200),))
    datamodule = ColorDataModule("folder", size=SIZE, batch_size=4, num_workers=0, seed=0, root=str(tmp_path / "train"),
                                 val_root=str(tmp_path / "val"), decode="gpu")
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["item"].tolist() == [0, 1, 3, 2]  # the truncated file is at position 3: ids, not positions
    datamodule.trainer = Training()
    with pytest.warns(UserWarning, match=f"skipped while decoding on the cpu: {paths[2]} "):
        batch = datamodule.on_before_batch_transfer(batch, 0)
    assert datamodule.decode_failures == {2}
    assert batch["item"].tolist() == [0, 1, 3] and batch["rgb"].shape == (3, 3, SIZE, SIZE)
    batch = datamodule.on_after_batch_transfer(batch, 0)
    assert batch["l"].shape == (3, 1, SIZE, SIZE) and torch.isfinite(batch["ab"]).all()


def test_a_replacement_files_failure_is_counted_as_its_own(tmp_path):
    """File 1 is gone after the scan: the worker reads file 2 in its place, whose pixel data is cut off."""
    paths = jpeg_folder(tmp_path / "photos")
    good = paths[0].read_bytes()
    paths[1].unlink()
    paths[2].write_bytes(good[:len(good) // 2])
    dataset = FolderImages(paths, SIZE, None, train=False, decode="gpu")
    with pytest.warns(UserWarning, match="missing file"):
        item = dataset[1]
    assert item["item"] == 1 and item["decode_failed"] == 1 and item["file"] == 2
    with pytest.warns(UserWarning, match=str(paths[2])):
        batch, dropped = decode_batch(dataset.collate([dataset[0], item]), "cpu", paths)
    assert dropped == [2] and batch["item"].tolist() == [0]


def test_the_datamodule_decodes_on_the_device_with_workers(tmp_path):
    """Two worker processes collate the bytes; validation batches, also as the commands read them
    (DeviceBatches), equal PIL's within the tolerance above."""
    jpeg_folder(tmp_path / "train")
    jpeg_folder(tmp_path / "val")
    batches = {}
    for decode in ("cpu", "gpu"):
        datamodule = ColorDataModule("folder", size=SIZE, batch_size=4, num_workers=2, seed=0,
                                     root=str(tmp_path / "train"), val_root=str(tmp_path / "val"), decode=decode)
        datamodule.setup("fit")
        datamodule.val_set.reduced_decode = False
        batch = datamodule.on_before_batch_transfer(next(iter(datamodule.val_dataloader())), 0)
        batches[decode] = datamodule.on_after_batch_transfer(batch, 0)
        if decode == "gpu":  # the path of the commands that read held-out data (evaluate, compare, study)
            batches["commands"] = next(iter(DeviceBatches(datamodule, "cpu")))
    for name in ("gpu", "commands"):
        assert torch.equal(batches["cpu"]["item"], batches[name]["item"])
        assert (batches["cpu"]["rgb"].float() - batches[name]["rgb"].float()).abs().mean() < 0.5
        assert (batches["cpu"]["ab"] - batches[name]["ab"]).abs().mean() < 0.01


def test_the_prior_streams_device_decoded_images(tmp_path):
    """The ab prior of a folder (bins formulations) through data.decode=gpu: the same images, so nearly the
    same counts; and one cache serves both (decode is a speed key)."""
    from colorlab.bins import gamut_centers
    from colorlab.config import compose
    from colorlab.data.datamodule import data_identity
    from colorlab.data.prior import stream_histograms

    jpeg_folder(tmp_path / "train")
    jpeg_folder(tmp_path / "val")
    counts, configs = {}, {}
    for decode in ("cpu", "gpu"):
        cfg = compose("unet_bins", ["data=folder", f"data.root={tmp_path / 'train'}",
                                    f"data.val_root={tmp_path / 'val'}", f"data.size={SIZE}", "data.batch_size=2",
                                    "data.num_workers=0", f"data.decode={decode}"])
        datamodule = ColorDataModule(seed=cfg.seed, **cfg.data)
        datamodule.setup("fit")
        histograms, n = stream_histograms(datamodule, cfg, gamut_centers(cfg.prior.grid))
        counts[decode], configs[decode] = histograms.sum(0), cfg
        assert n == 4
    share = {k: v / v.sum() for k, v in counts.items()}
    assert (share["cpu"] - share["gpu"]).abs().sum() < 0.05  # total variation; measured 0.016
    assert share["cpu"].count_nonzero() > 10  # not vacuous: the photos span many bins
    assert data_identity(configs["cpu"]) == data_identity(configs["gpu"])


def test_an_unknown_decode_is_refused_with_the_valid_ones(tmp_path):
    paths = jpeg_folder(tmp_path / "photos")
    with pytest.raises(ValueError, match="data.decode must be one of cpu, gpu. Got 'nvjpeg'"):
        FolderImages(paths, SIZE, None, train=True, decode="nvjpeg")


def reference_crop_for_split(rgb, size, scale, train, seed, index):
    """crop_for_split as it was before crop_box: the draws in their old order (side, then top and left from the
    resized photo, then the flip), written out independently."""
    rng = (np.random.default_rng(int(torch.randint(0, 2**62, ()).item())) if train
           else np.random.default_rng([seed, index]))
    side = int(rng.integers(size, scale + 1)) if train else scale
    h, w = rgb.shape[:2]
    factor = side / min(w, h)
    resized = np.asarray(Image.fromarray(rgb).resize((max(side, round(w * factor)), max(side, round(h * factor))),
                                                     Image.BICUBIC))
    rh, rw = resized.shape[:2]
    if train:
        top, left = rng.integers(0, rh - size + 1), rng.integers(0, rw - size + 1)
        flip = rng.random() < 0.5
    else:
        top, left, flip = (rh - size) // 2, (rw - size) // 2, False
    patch = resized[top:top + size, left:left + size]
    return torch.from_numpy(np.ascontiguousarray(patch[:, ::-1] if flip else patch)).permute(2, 0, 1)


def test_the_cpu_crops_are_unchanged():
    for seed, (w, h) in enumerate([(500, 375), (375, 500), (80, 64), (64, 300), (40, 30)]):
        rgb = photo_like(w, h, seed=seed)
        for train in (False, True):
            for index in range(4):
                torch.manual_seed(seed * 10 + index)
                cut = crop_for_split(rgb, 32, 40, train, seed, index)
                torch.manual_seed(seed * 10 + index)
                assert torch.equal(cut, reference_crop_for_split(rgb, 32, 40, train, seed, index))
