"""Reduced-scale JPEG decoding (PIL draft mode) against full decoding followed by resizing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from colorlab.data.photos import FolderImages, resize_shorter_side
from colorlab.io import read_rgb


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB with structure at several scales (coarse colour regions plus finer texture)."""
    rng = np.random.default_rng(seed)
    layers = []
    for cell in (400, 60, 12):
        coarse = rng.integers(0, 256, (height // cell + 2, width // cell + 2, 3), dtype=np.uint8)
        up = Image.fromarray(coarse).resize(((width // cell + 2) * cell, (height // cell + 2) * cell),
                                            Image.BICUBIC)
        layers.append(np.asarray(up, dtype=np.float32)[:height, :width])
    mixed = 0.6 * layers[0] + 0.3 * layers[1] + 0.1 * layers[2]
    return np.clip(mixed, 0, 255).astype(np.uint8)


def save_jpeg(path, rgb, quality=92):
    Image.fromarray(rgb).save(path, format="JPEG", quality=quality)
    return path


@pytest.mark.parametrize("width,height,min_side,reduction", [
    (2400, 1800, 146, 8),   # 1800 // 146 = 12 -> 1/8
    (1800, 2400, 300, 4),   # portrait; 1800 // 300 = 6 -> 1/4
    (1000, 700, 300, 2),    # 700 // 300 = 2 -> 1/2
    (500, 400, 300, 1),     # too small to reduce: full size
])
def test_reduced_decoding_keeps_the_shorter_side_and_reduces_by_the_largest_factor(
        tmp_path, width, height, min_side, reduction):
    path = save_jpeg(tmp_path / "p.jpg", photo_like(width, height))
    rgb = read_rgb(path, min_side=min_side)
    assert rgb.shape == (-(-height // reduction), -(-width // reduction), 3)
    assert min(rgb.shape[:2]) >= min_side


def test_other_formats_decode_at_full_size(tmp_path):
    rgb = photo_like(1600, 1200)
    Image.fromarray(rgb).save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "p.png", min_side=100), rgb)


def test_min_side_must_be_positive(tmp_path):
    path = save_jpeg(tmp_path / "p.jpg", photo_like(64, 64))
    with pytest.raises(ValueError, match="min_side must be a positive"):
        read_rgb(path, min_side=0)


@pytest.mark.parametrize("width,height,size", [(3200, 2400, 128), (2400, 3600, 224), (1200, 900, 224)])
def test_reduced_decoding_gives_the_crops_of_full_decoding_up_to_resampling(tmp_path, width, height, size):
    (tmp_path / "photos").mkdir()
    paths = [save_jpeg(tmp_path / "photos" / f"{i}.jpg", photo_like(width, height, seed=i)) for i in range(2)]
    fast = FolderImages(paths, size, None, train=False)
    slow = FolderImages(paths, size, None, train=False)
    slow.reduced_decode = False
    for i in range(len(paths)):
        a = fast[i]["rgb"].numpy().astype(np.float32)
        b = slow[i]["rgb"].numpy().astype(np.float32)
        # independent reference: full decode, resize with PIL, centre crop
        full = resize_shorter_side(np.asarray(Image.open(paths[i]).convert("RGB")), fast.scale)
        h, w = full.shape[:2]
        top, left = (h - size) // 2, (w - size) // 2
        ref = full[top:top + size, left:left + size].transpose(2, 0, 1).astype(np.float32)
        np.testing.assert_array_equal(b, ref)
        diff = np.abs(a - b)
        assert diff.mean() < 1.5, diff.mean()  # of 255; measured 0.27-0.56
        assert np.percentile(diff, 99) < 6.0  # measured 1-2
        # not vacuous: a crop shifted by 8 px is far outside the tolerance
        assert np.abs(np.roll(b, 8, axis=2) - b).mean() > 2.0
