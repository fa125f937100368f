"""colorlab.video's input checks (files generated here) and PyAV round trips."""

from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from colorlab.video.__main__ import main, read_clip, write_clip


def test_pyav_round_trip_keeps_frames_size_and_rate(tmp_path):
    frames = np.zeros((7, 48, 64, 3), np.uint8)
    for t in range(7):
        frames[t, :, 8 * t:8 * t + 8] = 200  # a bar moving 8 px per frame
    write_clip(tmp_path / "a.mp4", frames, Fraction(12))
    back, rate = read_clip(tmp_path / "a.mp4", 2048)
    assert back.shape == frames.shape and rate == 12
    assert np.abs(back.astype(int) - frames).mean() < 6  # lossy, but the same frames in order
    for t in range(7):
        assert back[t, 24, 8 * t + 4].mean() > 150


@pytest.mark.parametrize("case, message", [("corrupt", "not a readable video"), ("mixed", "mixed sizes"),
                                           ("empty", "no image frames"), ("big", "over max_side"),
                                           ("missing", "no such file")])
def test_bad_inputs_fail_before_anything_is_written(tmp_path, case, message):
    src = tmp_path / "in"
    if case == "corrupt":
        good = tmp_path / "good.mp4"
        write_clip(good, np.zeros((5, 32, 32, 3), np.uint8), Fraction(10))
        src = tmp_path / "cut.mp4"
        src.write_bytes(good.read_bytes()[:300])  # truncated
    elif case in ("mixed", "empty", "big"):
        src.mkdir()
        if case != "empty":
            Image.new("RGB", (32, 32)).save(src / "0.png")
            Image.new("RGB", (32, 40) if case == "mixed" else (32, 32)).save(src / "1.png")
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=message):
        main(["ckpt=none.ckpt", f"input={src}", f"out={out}", "max_side=31" if case == "big" else "max_side=64"])
    assert not out.exists()


def test_never_writes_over_an_existing_directory(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(SystemExit, match="never writes over"):
        main(["ckpt=x", "input=y", f"out={tmp_path / 'out'}"])
