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
from colorlab.data.jpeg import decode_batch
from colorlab.data.photos import FolderImages
from tests.test_draft import photo_like, save_jpeg

SIZE = 64


def jpeg_folder(root, sizes=((500, 375), (375, 500), (500, 333), (200, 150))):
    """ImageNet-like JPEGs (quality 90), and one smaller than data.scale (upsampled by both paths)."""
    root.mkdir(exist_ok=True)
    return [save_jpeg(root / f"{i}.jpg", photo_like(w, h, seed=i), quality=90) for i, (w, h) in enumerate(sizes)]


def pil_and_device(paths, train: bool, device="cpu", n=8):
    """The same items through PIL in the workers (full-size decode) and through decode_batch on ``device``;
    uint8 (n, 3, SIZE, SIZE) each. Training items draw their crops from torch's RNG: seeded alike."""
    pil = FolderImages(paths, SIZE, None, train, seed=3)
    pil.reduced_decode = False  # the reference: PIL's full decode, then PIL's bicubic resize
    encoded = FolderImages(paths, SIZE, None, train, seed=3, decode="gpu")
    torch.manual_seed(7)
    reference = torch.stack([pil[i]["rgb"] for i in range(n)])
    torch.manual_seed(7)
    batch, dropped = decode_batch(encoded.collate([encoded[i] for i in range(n)]), device)
    assert dropped == [] and "jpeg" not in batch and "box" not in batch
    return reference, batch["rgb"].cpu()


@pytest.mark.parametrize("train", [False, True], ids=["validation", "training"])
def test_device_decoding_gives_pils_crops_up_to_resampling(tmp_path, train):
    reference, decoded = pil_and_device(jpeg_folder(tmp_path / "photos"), train)
    diff = (reference.float() - decoded.float()).abs()
    # stated tolerance, in levels of 255 (libjpeg and torch's antialiased bicubic against PIL's decode and
    # bicubic): mean < 0.5, 99th percentile <= 2, max <= 12. Measured on these photos over 4 seeds: mean
    # 0.10-0.11, p99 1, max 1; on scikit-image's sharper photos at 500 x 375: mean 0.09-0.10, max 4-6
    assert diff.mean() < 0.5, diff.mean()
    assert diff.flatten().quantile(0.99) <= 2
    assert diff.max() <= 12
    # not vacuous: the same crops 4 px off, or unflipped, are far outside it
    assert (reference.float() - decoded.roll(4, dims=-1).float()).abs().mean() > 2
    if train:
        assert (reference.float() - decoded.flip(-1).float()).abs().mean() > 2


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


def test_a_file_that_fails_on_the_device_is_dropped_and_counted_by_the_datamodule(tmp_path):
    paths = jpeg_folder(tmp_path / "train")
    good = paths[0].read_bytes()
    paths[1].write_bytes(good[:len(good) // 2])  # the header reads, the pixel data is cut off
    jpeg_folder(tmp_path / "val", sizes=((300, 200),))
    datamodule = ColorDataModule("folder", size=SIZE, batch_size=4, num_workers=0, seed=0, root=str(tmp_path / "train"),
                                 val_root=str(tmp_path / "val"), decode="gpu")
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))  # all four files

    class Training:  # what _on_host reads of a Trainer: training mode, and the device
        training = True
        strategy = type("Strategy", (), {"root_device": torch.device("cpu")})()

    datamodule.trainer = Training()
    with pytest.warns(UserWarning, match="not decodable"):
        batch = datamodule.on_before_batch_transfer(batch, 0)
    assert datamodule.decode_failures == {1}
    assert sorted(batch["item"].tolist()) == [0, 2, 3] and batch["rgb"].shape == (3, 3, SIZE, SIZE)
    batch = datamodule.on_after_batch_transfer(batch, 0)
    assert batch["l"].shape == (3, 1, SIZE, SIZE) and torch.isfinite(batch["ab"]).all()


def test_the_datamodule_decodes_on_the_device_with_workers(tmp_path):
    """Two worker processes collate the bytes; validation batches equal PIL's within the tolerance above."""
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


def test_an_unknown_decode_is_refused_with_the_valid_ones(tmp_path):
    paths = jpeg_folder(tmp_path / "photos")
    with pytest.raises(ValueError, match="data.decode must be one of cpu, gpu. Got 'nvjpeg'"):
        FolderImages(paths, SIZE, None, train=True, decode="nvjpeg")


def test_box_draws_match_the_cpu_crops_random_numbers(tmp_path):
    """crop_box is what crop_for_split cuts, for every size and split: the CPU path's pixels are unchanged."""
    from colorlab.data.photos import crop_box, crop_for_split

    for seed, (w, h) in enumerate([(500, 375), (375, 500), (80, 64), (64, 300)]):
        rgb = photo_like(w, h, seed=seed)
        for train in (False, True):
            torch.manual_seed(seed)
            box = crop_box(w, h, 64, 73, train, seed, index=5)
            torch.manual_seed(seed)
            cut = crop_for_split(rgb, 64, 73, train, seed, 5)
            resized = np.asarray(Image.fromarray(rgb).resize((box.width, box.height), Image.BICUBIC))
            patch = resized[box.top:box.top + 64, box.left:box.left + 64]
            patch = patch[:, ::-1] if box.flip else patch
            assert torch.equal(cut, torch.from_numpy(patch.copy()).permute(2, 0, 1))
