import numpy as np
import pytest
from PIL import Image

from colorlab.io import UnreadableImage, read_rgb
from tests.corpus import colour_photo, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("name,reason", [
    ("zero_byte.jpg", "empty file"), ("text.jpg", "not an image"), ("truncated.jpg", "corrupt image data"),
    ("bomb.png", "decompression bomb"), ("loop.jpg", "not an image"), ("missing.jpg", "missing file"),
])
def test_unreadable_files_raise_with_reason(corpus, name, reason):
    path = corpus.get(name, next(iter(corpus.values())).parent / name)
    with pytest.raises(UnreadableImage) as info:
        read_rgb(path)
    assert info.value.reason == reason and name in str(info.value)


@pytest.mark.parametrize("name", ["good_0.jpg", "cmyk.jpg", "gray16.png", "palette.png", "rgba.png",
                                  "gray.jpg", "tiny_8x8.png", "exif_rotated.jpg", "ünïcødé_名前.png"])
def test_odd_but_valid_files_decode_to_rgb(corpus, name):
    rgb = read_rgb(corpus[name])
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


def test_decoding_semantics(corpus):
    # EXIF orientation 6 is applied: the stored 20x50 image is shown as 50x20
    assert read_rgb(corpus["exif_rotated.jpg"]).shape[:2] == (56 - 6, 20)
    # 16-bit gray is scaled to 8 bits, not clipped at 255
    gray16 = read_rgb(corpus["gray16.png"])
    np.testing.assert_array_equal(gray16[..., 0], colour_photo(11)[..., 0])
    # RGBA is composited onto white: half-transparent pixels are lighter than the colour
    rgba = read_rgb(corpus["rgba.png"]).astype(int)
    expected = colour_photo(13).astype(int) * 128 // 255 + 255 * 127 // 255
    assert np.abs(rgba - expected).max() <= 2


def smooth_photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 image: smooth colour gradients and soft-edged discs (JPEG-friendly, like photographs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([0.5 + 0.4 * np.sin(6 * x + c + rng.random()) * np.cos(4 * y + 2 * c) for c in range(3)], -1)
    for _ in range(12):
        cy, cx, r = rng.random(), rng.random() * w / h, 0.05 + 0.15 * rng.random()
        weight = 1 / (1 + np.exp((np.hypot(y * max(h, w) / h - cy, x * max(h, w) / h - cx) - r) * 200))
        rgb = rgb * (1 - weight[..., None]) + rng.random(3) * weight[..., None]
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("large") / "large.jpg"
    Image.fromarray(smooth_photo(1200, 1600)).save(path, quality=92)
    return path


@pytest.mark.parametrize("side", [64, 146, 292])
def test_reduced_scale_jpeg_decoding_matches_full_decoding_then_resizing(large_jpeg, side):
    """Draft-mode decoding (1/2, 1/4, 1/8 from the DCT) then resizing to the crop scale gives the same pixels as
    full decoding then resizing, up to resampling differences; it decodes fewer pixels."""
    from colorlab.data.photos import resize_shorter_side

    reduced = read_rgb(large_jpeg, min_side=side)
    assert min(reduced.shape[:2]) >= side and reduced.shape[0] * 4 <= 1200  # decoded at 1/4 or less
    full = resize_shorter_side(read_rgb(large_jpeg), side).astype(float)
    fast = resize_shorter_side(reduced, side).astype(float)
    assert fast.shape == full.shape
    difference = np.abs(fast - full)
    assert difference.mean() < 1.5 and np.percentile(difference, 99) < 10, (difference.mean(), difference.max())


def test_reduced_scale_decoding_leaves_small_and_non_jpeg_files_alone(tmp_path):
    photo = smooth_photo(300, 400)
    Image.fromarray(photo).save(tmp_path / "small.jpg", quality=92)
    Image.fromarray(photo).save(tmp_path / "large.png")
    assert read_rgb(tmp_path / "small.jpg", min_side=200).shape == (300, 400, 3)  # 1/2 would be below 200
    assert np.array_equal(read_rgb(tmp_path / "large.png", min_side=10), photo)
