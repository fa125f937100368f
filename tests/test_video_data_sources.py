"""The real-content video sources: photo clips with exact flow (colorlab/video/photo_clips.py) and
data=video_folder (colorlab/data/video_folder.py), on clips generated here."""

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from colorlab.flow import warp
from colorlab.video.__main__ import write_clip
from colorlab.video.metrics import warp_error
from colorlab.video.photo_clips import photo_clip_set


def test_pan_clips_move_by_their_velocity_and_have_zero_ground_truth_warp_error():
    clips = photo_clip_set("samples", 32, clips=5, frames=6, motion="pan", seed=3)
    assert len(clips) == 5 and clips[0]["rgb"].shape == (6, 3, 32, 32) and "bimodal" not in clips[0]
    for i in range(len(clips)):
        c = clips[i]
        vx, vy = c["velocity"]
        assert (vx, vy) != (0, 0) and max(abs(vx), abs(vy)) <= 2
        rgb = c["rgb"].numpy()
        for t in range(5):  # the content at (y, x) of frame t is at (y - vy, x - vx) in frame t+1
            a = rgb[t][:, max(0, vy):32 + min(0, vy), max(0, vx):32 + min(0, vx)]
            b = rgb[t + 1][:, max(0, -vy):32 + min(0, -vy), max(0, -vx):32 + min(0, -vx)]
            assert np.array_equal(a, b)
            assert not np.array_equal(rgb[t], rgb[t + 1])  # and the camera really moves
        assert (c["flow"][:, 0] == -vx).all() and (c["flow"][:, 1] == -vy).all()
        assert warp_error(c["rgb"].double() / 255, c["flow"], c["valid"]) < 1e-20
        assert warp_error(c["rgb"].double() / 255, torch.zeros_like(c["flow"]), c["valid"]) > 1e-4
    assert clips[2]["velocity"] == photo_clip_set("samples", 32, 5, 6, "pan", seed=3)[2]["velocity"]  # deterministic
    with pytest.raises(IndexError, match="clip 5 of 5"):  # clip 5 does not wrap round to photo 0,
        clips[5]
    assert [c["index"] for c in clips] == [0, 1, 2, 3, 4]  # so iterating over the clips ends


def test_zoom_clip_is_reproduced_by_warping_along_its_flow_and_not_by_a_zero_flow():
    clips = photo_clip_set("samples", 48, clips=5, frames=5, motion="zoom", seed=0)
    for i in range(len(clips)):
        c = clips[i]
        assert abs(np.log(c["ratio"])) > 0.029  # at least a 3 % zoom per frame
        rgb = c["rgb"].double() / 255
        warped, _ = warp(rgb[1:], c["flow"])
        m = c["valid"].expand_as(warped)
        exact = (warped - rgb[:-1]).abs()[m].mean()
        still = (rgb[1:] - rgb[:-1]).abs()[m].mean()  # a wrong (zero) flow
        assert exact < 0.01 and still > 2 * exact, (i, float(exact), float(still))
        zoom_in = c["ratio"] < 1  # a shrinking window: the content grows, the border leaves the frame
        assert bool(c["valid"].all()) != zoom_in and c["valid"][:, :, 24, 24].all()


def test_photo_clip_sets_refuse_bad_motion_and_source(tmp_path):
    with pytest.raises(ValueError, match="motion must be one of"):
        photo_clip_set("samples", 32, 2, motion="tilt")
    with pytest.raises(ValueError, match="'samples' or 'folder:"):
        photo_clip_set("photos", 32, 2)
    with pytest.raises(ValueError, match="not a directory"):
        photo_clip_set(f"folder:{tmp_path / 'none'}", 32, 2)
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), np.uint8)).save(tmp_path / "a.png")
    c = photo_clip_set(f"folder:{tmp_path}", 32, 2, frames=4)[1]
    assert c["rgb"].shape == (4, 3, 32, 32) and warp_error(c["rgb"].double() / 255, c["flow"], c["valid"]) < 1e-20


# data=video_folder: frame t of every generated clip has a top band of green level BASE + STEP * t (its
# number) over a still background with a blue bar moving right by 2 px per frame
BASE, STEP, N_FRAMES, BAND = 10, 12, 20, 10


def frame_index(rgb: torch.Tensor) -> int:
    """The frame number written into a decoded frame (3, H, W) uint8 (shorter side 40 or 32), from its band."""
    return round((float(rgb[1, 1:5].float().median()) - BASE) / STEP)


def write_h264(path, video: np.ndarray, gop: int) -> None:
    """An H.264 .mp4 with a keyframe every ``gop`` frames (B-frames on), so windows are reached by seeking."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], "yuv420p"
        stream.codec_context.gop_size = gop
        for f in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_clips(folder, n=3, frames=N_FRAMES):
    folder.mkdir()
    for i in range(n):
        video = np.zeros((frames, 40, 48, 3), np.uint8)
        for t in range(frames):
            video[t] = (200, 120, 60 + 20 * i)
            video[t, :BAND] = (200, BASE + STEP * t, 60)
            video[t, BAND:, 2 * t:2 * t + 6] = (30, 30, 220)
        if i == 0:
            write_clip(folder / f"clip{i}.mp4", video, Fraction(10))  # x264's default: one keyframe
        else:
            write_h264(folder / f"clip{i}.mp4", video, gop=5)
    (folder / "broken.mp4").write_bytes((folder / "clip0.mp4").read_bytes()[:300])  # truncated
    return folder


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return make_clips(tmp_path_factory.mktemp("videos") / "clips")


def test_video_folder_windows_are_consecutive_frames_split_by_file(clip_folder):
    from colorlab.data.video_folder import video_folder_splits

    with pytest.warns(UserWarning, match="1 unreadable video"):
        train, val = video_folder_splits(size=32, seed=0, root=str(clip_folder), frames=8, stack=3)
    assert dict(train.skipped) == {"unreadable video (corrupt or truncated)": 1}
    train_files, val_files = ({v.path.name for v in d.videos} for d in (train, val))
    assert not train_files & val_files and train_files | val_files == {"clip0.mp4", "clip1.mp4", "clip2.mp4"}
    # 20 frames: two windows of 8 per file (the last 4 frames left out), one item per frame
    assert len(train) == 8 * 2 * len(train.videos) and len(val) == 8 * 2 * len(val.videos) and len(val.videos) == 1
    for data in (train, val):
        for window in range(len(data.windows)):
            items = [data[window * 8 + t] for t in range(8)]
            start = 8 * (window % 2)
            assert [frame_index(it["rgb"]) for it in items] == list(range(start, start + 8))
            assert items[0]["rgb"].shape == (3, 32, 32) and items[0]["rgb"].dtype == torch.uint8
            # the stack around frame t is frames t-1, t, t+1 of the window, cropped alike (clamped at its ends)
            assert torch.equal(items[3]["context"][0], items[2]["rgb"]) and torch.equal(items[3]["context"][2],
                                                                                          items[4]["rgb"])
            assert torch.equal(items[0]["context"][0], items[0]["rgb"])
    again, _ = video_folder_splits(size=32, seed=0, root=str(clip_folder), frames=8, stack=3)
    assert torch.equal(again[5]["rgb"], train[5]["rgb"])  # the training crop depends on (seed, window) only
    carrying, _ = video_folder_splits(size=32, seed=0, root=str(clip_folder), frames=8, stack=3, previous=True)
    for t in (1, 5):  # frame t-1's stack, for stack models' carry_self and temporal loss
        assert torch.equal(carrying[t]["previous_context"], again[max(t - 1, 0)]["context"])


def test_video_folder_previous_frame_follows_the_moving_bar(clip_folder):
    from colorlab.data.video_folder import video_folder_splits

    _, val = video_folder_splits(size=40, seed=0, root=str(clip_folder), frames=8, previous=True)
    first, item = val[0], val[5]
    assert not first["previous_valid"].any() and first["previous"].max() == 0  # a window's key frame
    assert frame_index(item["rgb"]) == 5 and frame_index(val[4]["rgb"]) == 4
    valid = item["previous_valid"][0, BAND:]
    assert valid.float().mean() > 0.8
    # frame 4 carried onto frame 5 along the estimated flow: its blue bar lands where frame 5's is
    bar, carried, still = (x[2, BAND:] > 150 for x in (item["rgb"], item["previous"], val[4]["rgb"]))
    agree, agree_still = ((x[valid] == bar[valid]).float().mean() for x in (carried, still))
    # (measured 0.976, and 0.897 for frame 4 left where it was; Farneback is blunt inside the flat bar)
    assert agree > 0.95 and 1 - agree < (1 - agree_still) / 2, (float(agree), float(agree_still))
    # frame t-1 itself and the flow it was carried along, for temporal.weight and hints.carry_self
    assert torch.equal(item["previous_frame"], val[4]["rgb"]) and torch.equal(first["previous_frame"], first["rgb"])
    carried = warp(item["previous_frame"][None].float(), item["previous_flow"][None])[0][0] * item["previous_valid"]
    assert (carried.round() - item["previous"].float()).abs().max() <= 1
    on_bar = item["previous_flow"][0, BAND:][bar & valid]  # the bar moves 2 px right: the flow back is -2 px in x
    assert on_bar.numel() > 20 and abs(float(on_bar.median()) + 2) < 0.25


def test_video_folder_with_nothing_readable_names_the_folder_and_extensions(tmp_path):
    from colorlab.data.video_folder import video_folder_splits

    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"\x00" * 500)
    (tmp_path / "v" / "b.txt").write_text("not a clip")
    with pytest.raises(ValueError, match=r"data.root=.*v: 0 readable.*\.webm"), pytest.warns(UserWarning):
        video_folder_splits(size=32, seed=0, root=str(tmp_path / "v"))


@pytest.mark.parametrize("experiment", ["video_frame", "video_propagate"])  # propagate: Farneback-carried
def test_fit_on_video_folder_writes_a_checkpoint(clip_folder, tmp_path, experiment):  # frames, own colours too
    from colorlab.fit import main

    run = tmp_path / "run"
    rc = main([f"experiment={experiment}", "data=video_folder", f"data.root={clip_folder}", f"run_dir={run}",
               "logger=none", "data.num_workers=0", "data.batch_size=4", "trainer.max_steps=3",
               "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu",
               f"prior.cache_dir={tmp_path / 'priors'}"])
    assert rc == 0
    assert (run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 3 and metrics["data/skipped"] == {"unreadable video (corrupt or truncated)": 1}


def test_a_file_that_fails_to_decode_later_is_replaced_and_reported(clip_folder, tmp_path):
    import shutil

    from colorlab.data.video_folder import video_folder_splits

    root = tmp_path / "copy"
    shutil.copytree(clip_folder, root)
    (root / "broken.mp4").unlink()
    train, _ = video_folder_splits(size=32, seed=0, root=str(root), frames=8)
    broken = train.videos[0].path
    broken.write_bytes(broken.read_bytes()[:2000])  # cut after indexing
    with pytest.warns(UserWarning, match="skipped while decoding"):
        item = train[3]
    assert item["decode_failed"] == 0 and item["window"] == train.first_window[1] and frame_index(item["rgb"]) == 3
    assert train[len(train) - 1]["decode_failed"] == -1
