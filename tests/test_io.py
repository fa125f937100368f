import numpy as np
import pytest

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

