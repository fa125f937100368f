import hashlib
import json

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


def scene(size=96, index=3):
    """A synthetic validation scene: uint8 (size, size, 3) and (x, y) of its bimodal diamond's centre."""
    from colorlab.data.synthetic import SyntheticScenes

    item = SyntheticScenes(length=8, size=size, seed=5, split="val")[index]
    ys, xs = np.nonzero(item["bimodal"][0].numpy())
    return item["rgb"].permute(1, 2, 0).numpy(), (int(xs.mean()), int(ys.mean()))


def ab_at(path, x, y):
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    return uint8_to_lab(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None])[0, 1:, y, x]


class CopiesHints(torch.nn.Module):
    """Stand-in for a hint network whose behaviour is known: ab = the hint's ab where the mask is set,
    a fixed colour elsewhere; every other output channel (the bins head) zero. Input (B, 4, h, w):
    L, hint ab, mask."""

    size_multiple = 1

    def __init__(self, out_channels: int, elsewhere=(0.1, 0.2)):
        super().__init__()
        self.out_channels, self.elsewhere = out_channels, torch.tensor(elsewhere).view(1, 2, 1, 1)

    def forward(self, x):
        hint_ab, hint_mask = x[:, 1:3], x[:, 3:4]
        out = x.new_zeros(x.shape[0], self.out_channels, *x.shape[-2:])
        out[:, :2] = torch.where(hint_mask > 0, hint_ab, self.elsewhere.to(x))
        return out


def test_hints_file_puts_the_hint_colour_at_its_place_and_nowhere_else(hints_checkpoint, tmp_path, monkeypatch):
    """The hint path from a hints file to the network's input: its position (input pixels -> network
    pixels), its colour and its patch, checked on a network that copies its hints, so the result does
    not depend on training (learning to use hints is test_evaluate's hints-protocol test)."""
    import colorlab.models
    from colorlab.data.synthetic import BIMODAL_AB

    load = colorlab.models.load_colorizer

    def load_with_stand_in(*args, **kwargs):
        model = load(*args, **kwargs)
        with torch.no_grad():
            channels = model.net(torch.zeros(1, 4, 32, 32)).shape[1]
        model.net = CopiesHints(channels)
        return model

    monkeypatch.setattr(colorlab.models, "load_colorizer", load_with_stand_in)
    rgb, (x, y) = scene()
    Image.fromarray(rgb).save(tmp_path / "scene.png")
    source = f"input={tmp_path / 'scene.png'}"
    assert colorize_main([f"ckpt={hints_checkpoint}", source, f"out={tmp_path / 'auto'}"]) == 0
    target = torch.tensor(BIMODAL_AB) * 0.6  # a paler green: the full one leaves sRGB at the diamond's L
    (tmp_path / "hints.json").write_text(json.dumps([{"x": x, "y": y, "ab": target.tolist(), "size": 9}]))
    assert colorize_main([f"ckpt={hints_checkpoint}", source, f"out={tmp_path / 'hinted'}",
                          f"hints={tmp_path / 'hints.json'}"]) == 0
    elsewhere = torch.tensor([11.0, 22.0])  # CopiesHints' colour without hints, x 110
    assert (ab_at(tmp_path / "auto" / "scene.png", x, y) - elsewhere).norm() < 3  # uint8 rounding
    assert (ab_at(tmp_path / "hinted" / "scene.png", x, y) - target).norm() < 3
    # 9 input px = 3 network px at 96 -> 32: 8 px away the colour is the stand-in's own again
    for dx, dy in ((8, 0), (-8, 0), (0, 8), (0, -8)):
        assert (ab_at(tmp_path / "hinted" / "scene.png", x + dx, y + dy) - elsewhere).norm() < 3
    assert (ab_at(tmp_path / "hinted" / "scene.png", 2, 2) - elsewhere).norm() < 3


def test_hint_errors_are_clear(checkpoint, hints_checkpoint, tmp_path, capsys):
    Image.fromarray(scene(64)[0]).save(tmp_path / "scene.png")
    hints = tmp_path / "hints.json"
    hints.write_text(json.dumps([{"x": 10, "y": 10, "color": "#d02020"}]))
    common = [f"input={tmp_path / 'scene.png'}", f"out={tmp_path / 'out'}", f"hints={hints}"]
    assert colorize_main([f"ckpt={checkpoint}", *common]) == 2
    assert "trained without hints" in capsys.readouterr().err
    hints.write_text(json.dumps([{"x": 64, "y": 10, "color": "#d02020"}]))
    assert colorize_main([f"ckpt={hints_checkpoint}", *common]) == 2
    assert "hint 0: (64, 10) is outside the image; valid: 0 <= x < 64" in capsys.readouterr().err
    hints.write_text(json.dumps([{"x": 6, "y": 10, "color": "crimson"}]))
    assert colorize_main([f"ckpt={hints_checkpoint}", *common]) == 2
    assert "#rrggbb" in capsys.readouterr().err
    assert colorize_main([f"ckpt={hints_checkpoint}", f"input={tmp_path}", f"out={tmp_path / 'o'}",
                          f"hints={hints}"]) == 2
    assert "give input=FILE, not a directory" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "o").exists()  # nothing written on errors


def test_palettes_are_written_as_swatches_and_json(hints_checkpoint, tmp_path):
    Image.fromarray(scene(64)[0]).save(tmp_path / "scene.png")
    assert colorize_main([f"ckpt={hints_checkpoint}", f"input={tmp_path / 'scene.png'}", f"out={tmp_path / 'out'}",
                          "palette=4", "palette_at=30,40", "saturation=1.2", "gamma=1.1"]) == 0
    palettes = json.loads((tmp_path / "out" / "scene_palette.json").read_text())
    assert palettes["point_xy"] == [30, 40]
    for name in ("image", "point"):
        assert 1 <= len(palettes[name]) <= 4
        assert sum(c["share"] for c in palettes[name]) == pytest.approx(1.0, abs=1e-3)
        assert all(len(c["hex"]) == 7 and c["hex"].startswith("#") for c in palettes[name])
    with Image.open(tmp_path / "out" / "scene_palette.png") as swatches:
        assert swatches.size[1] > 100  # two rows


def test_palette_at_needs_a_distribution(tmp_path, capsys, tiny_overrides):
    from colorlab.config import compose

    train(compose("regression_l2", [*tiny_overrides, "trainer.max_epochs=1", "data.size=32"]))
    Image.fromarray(scene(64)[0]).save(tmp_path / "scene.png")
    assert colorize_main([f"ckpt={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}", f"input={tmp_path / 'scene.png'}",
                          f"out={tmp_path / 'out'}", "palette=3", "palette_at=5,5"]) == 2
    assert "needs a model that predicts an ab distribution" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_colorize_refuses_bad_numbers_and_out_file_before_any_work(checkpoint, tmp_path, capsys):
    Image.fromarray(scene(64)[0]).save(tmp_path / "scene.png")
    (tmp_path / "taken").write_text("x")
    common = [f"ckpt={checkpoint}", f"input={tmp_path / 'scene.png'}"]
    for extra, words in [("temperature=nan", "temperature must be"), ("gamma=nan", "gamma must be"),
                         ("saturation=inf", "saturation in [0, 10]"), ("saturation=nan", "saturation in"),
                         ("palette=100000", "at most 64"), ("size=100000", "size must be in 8..2048"),
                         ("size=-8", "size must be in 8..2048")]:
        assert colorize_main([*common, f"out={tmp_path / 'out'}", extra]) == 2, extra
        assert words in capsys.readouterr().err, extra
    assert colorize_main([*common, f"out={tmp_path / 'taken'}"]) == 2
    err = capsys.readouterr().err
    assert err == f"colorlab.colorize: error: out={tmp_path / 'taken'} is an existing file; give a directory\n"
    assert not (tmp_path / "out").exists()


def test_colorize_never_writes_through_a_dangling_link(checkpoint, tmp_path):
    Image.fromarray(scene(64)[0]).save(tmp_path / "scene.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scene.png").symlink_to(tmp_path / "outside.png")
    assert colorize_main([f"ckpt={checkpoint}", f"input={tmp_path / 'scene.png'}", f"out={tmp_path / 'out'}"]) == 0
    assert not (tmp_path / "outside.png").exists() and (tmp_path / "out" / "scene-1.png").is_file()
