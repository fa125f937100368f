import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from colorlab.color import uint8_to_lab
from colorlab.colorize import colorize
from colorlab.colorize import main as colorize_main
from colorlab.config import compose
from colorlab.fit import train
from colorlab.io import read_rgb
from tests.corpus import write_corpus


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    train(compose("unet_bins", [f"run_dir={tmp / 'run'}", "logger=none", "data.num_workers=0", "data.size=32",
                                "data.batch_size=8", "data.train_size=32", "data.val_size=8",
                                "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                                f"prior.cache_dir={tmp / 'priors'}", "prior.max_images=32"]))
    return tmp / "run" / "checkpoints" / "last.ckpt"


def digest(path):
    return hashlib.sha1(path.read_bytes()).hexdigest()


def test_colorize_every_odd_input_kind_keeps_size_and_lightness(checkpoint, tmp_path):
    files = write_corpus(tmp_path / "in")
    before = {p: digest(p) for p in files.values() if p.is_file() and not p.is_symlink()}
    written, skipped = colorize(checkpoint, tmp_path / "in", tmp_path / "out", temperature=0.2)
    assert skipped == {"empty file": 1, "not an image": 2, "corrupt image data": 1, "decompression bomb": 1}
    assert len(written) == len(files) - 5
    for name in ("cmyk.jpg", "gray16.png", "palette.png", "rgba.png", "gray.jpg", "tiny_8x8.png",
                 "exif_rotated.jpg", "ünïcødé_名前.png", "good_0.jpg"):
        source = read_rgb(files[name])  # upright, RGB
        with Image.open(tmp_path / "out" / f"{files[name].stem}.png") as result:
            output = np.asarray(result.convert("RGB"))
        assert output.shape == source.shape, name  # the input's exact size (EXIF rotation applied)
        l_in = uint8_to_lab(torch.from_numpy(source).permute(2, 0, 1)[None])[0, 0]
        l_out = uint8_to_lab(torch.from_numpy(output).permute(2, 0, 1)[None])[0, 0]
        assert (l_in - l_out).abs().max() < 3.0, name  # full-resolution L kept (8-bit and gamut rounding)
    assert {p: digest(p) for p in before} == before  # inputs untouched


def test_colorize_never_writes_over_existing_files(checkpoint, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(folder / "a.png")
    original = digest(folder / "a.png")
    assert colorize_main([f"ckpt={checkpoint}", f"input={folder}", f"out={folder}"]) == 0
    assert digest(folder / "a.png") == original and (folder / "a-1.png").is_file()


def test_colorize_errors_are_clear(checkpoint, tmp_path, capsys):
    assert colorize_main([f"ckpt={checkpoint}", f"input={tmp_path / 'nope'}", f"out={tmp_path}"]) == 2
    assert "neither a file nor a directory" in capsys.readouterr().err
    assert colorize_main([f"ckpt={checkpoint}", "input=x", f"out={tmp_path}", "size=30"]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert colorize_main([f"ckpt={checkpoint}", "inptu=x"]) == 2
    assert "unknown ['inptu']" in capsys.readouterr().err
