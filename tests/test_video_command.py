"""colorlab.video's input checks (files generated here) and PyAV round trips."""

import re
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image

from colorlab.video.__main__ import main, read_clip, write_clip


def one_error_line(capsys) -> str:
    """The command's stderr: exactly one line, ``colorlab.video: error: ...``."""
    err = capsys.readouterr().err.strip()
    assert err.startswith("colorlab.video: error: ") and "\n" not in err, err
    return err


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
def test_bad_inputs_fail_before_anything_is_written(tmp_path, case, message, capsys):
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
    max_side = "max_side=31" if case == "big" else "max_side=64"
    assert main(["ckpt=none.ckpt", f"input={src}", f"out={out}", max_side]) == 2
    assert re.search(message, one_error_line(capsys))
    assert not out.exists()


def test_never_writes_over_an_existing_directory(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert main(["ckpt=x", "input=y", f"out={tmp_path / 'out'}"]) == 2
    assert "never writes over" in one_error_line(capsys)


def test_frames_folder_in_numeric_order_and_without_gaps(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(1, 12):  # frame_1 .. frame_11, unpadded: by name, frame_10 would come second
        Image.new("RGB", (16, 16), (20 * i, 0, 0)).save(folder / f"frame_{i}.png")
    frames, _ = read_clip(folder, 64)
    assert [int(f[0, 0, 0]) for f in frames] == [20 * i for i in range(1, 12)]
    (folder / "frame_7.png").unlink()
    with pytest.raises(ValueError, match=r"missing frame numbers \[7\]"):
        read_clip(folder, 64)


def test_variable_frame_rate_is_refused(tmp_path):
    import av

    path = tmp_path / "vfr.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for pts in (0, 40, 80, 200, 240, 280):  # a 120 ms hole among 40 ms intervals
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(ValueError, match="variable frame rate"):
        read_clip(path, 64)


def test_odd_sizes_are_kept_exactly(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (4, 31, 45, 3), dtype=np.uint8)
    write_clip(tmp_path / "odd.mp4", frames, Fraction(15))
    back, rate = read_clip(tmp_path / "odd.mp4", 64)
    assert back.shape == frames.shape and rate == 15


def test_key_frame_hints_file(tmp_path, untrained_video, capsys):
    import json

    frames = np.full((5, 27, 41, 3), 128, np.uint8)
    write_clip(tmp_path / "clip.mp4", frames, Fraction(8))
    hints = tmp_path / "key.json"
    hints.write_text(json.dumps([{"x": 20, "y": 13, "ab": [40, -30]}]))
    args = [f"input={tmp_path / 'clip.mp4'}", f"hints={hints}"]
    assert main([f"ckpt={untrained_video['video_frame']}", f"out={tmp_path / 'a'}", *args]) == 2
    assert "needs a checkpoint trained with hints" in one_error_line(capsys)
    hints.write_text(json.dumps([{"x": 99, "y": 13, "ab": [40, -30]}]))  # outside the 41 x 27 frames
    assert main([f"ckpt={untrained_video['video_propagate']}", f"out={tmp_path / 'b'}", *args]) == 2
    assert "key.json" in one_error_line(capsys)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    hints.write_text(json.dumps([{"x": 20, "y": 13, "ab": [40, -30]}]))
    assert main([f"ckpt={untrained_video['video_propagate']}", f"out={tmp_path / 'c'}", *args]) == 0
    back, rate = read_clip(tmp_path / "c" / "colorized.mp4", 64)
    assert back.shape == frames.shape and rate == 8  # the input's odd size and rate


def test_evaluate_reports_temporal_metrics_of_video_checkpoints(tmp_path, untrained_video):
    import json

    from colorlab.data.video_synthetic import SyntheticVideo
    from colorlab.evaluate import main as evaluate_main
    from colorlab.video.metrics import cdc, warp_error

    for name, rows in (("video_frame", 1), ("video_propagate", 4)):
        out = tmp_path / f"eval_{name}"
        args = [f"ckpt={untrained_video[name]}", f"out={out}", "data.val_size=2", "evaluate.video_clips=3",
                "evaluate.fid=false", "evaluate.lpips=false"]
        assert evaluate_main(args) == 0
        report = json.loads((out / "metrics.json").read_text())
        temporal = report["temporal"]
        assert [r["model"] for r in temporal][0] == "ground truth" and len(temporal) == 1 + rows
        clips = list(SyntheticVideo(32, 3, 0, "val", 8))  # 3 held-out clips: more than validation's 2
        assert temporal[0]["clips"] == 3
        truth_warp = sum(warp_error(c["rgb"].double() / 255, c["flow"], c["valid"]) for c in clips) / 3
        assert temporal[0]["warp_error"] == pytest.approx(truth_warp)
        assert temporal[0]["cdc"] == pytest.approx(sum(cdc(c["rgb"]) for c in clips) / 3)
        assert all(0 <= r["flip_rate"] <= 1 and r["psnr"] < 100 for r in temporal[1:])
        assert "| model | warp_error | cdc | flip_rate |" in (out / "metrics.md").read_text()


def test_help_and_no_arguments(capsys):
    assert main(["--help"]) == 0
    assert "python -m colorlab.video ckpt=PATH" in capsys.readouterr().out
    assert main([]) == 2  # nothing to do: the usage, and exit 2 as every command
