"""``data=video_folder``: a user's own clips, any container FFmpeg reads, decoded with PyAV.

``data.root`` is searched recursively for video files (``VIDEO_SUFFIXES``). At setup every file is
demuxed once, without decoding, to list its frames' timestamps and keyframes (a progress bar appears
when this takes more than 2 s), and its first frame is decoded to check the codec; unreadable,
corrupt or truncated files, files without a video stream (audio only) and files shorter than
``frames`` are skipped and counted in ``skipped``. Each file is cut into non-overlapping windows of
``frames`` consecutive frames (the tail that does not fill one is left out). Train and val are split
by file (a hash of the file's path under root, the same for every seed; ``val_root`` instead gives the
val files).

Items are per-frame dicts like ``SyntheticVideoFrames``': item i is frame i % frames of window
i // frames, uint8 ``rgb`` (3, size, size): the frame's shorter side resized to ``size``, then a crop
that is the same for the whole window (training: a random position and horizontal flip drawn from
(seed, window), so the same in every epoch; validation: the centre). With ``stack`` > 1 (odd) also
``context`` (stack, 3, size, size), the frames centred on it, clamped at the window's ends; with
``previous`` also ``previous`` (3, size, size), frame t-1 carried onto frame t's grid along the
backward Farneback flow of the two cropped frames, and ``previous_valid`` (1, size, size), the
pixels whose flow passes the forward-backward consistency check (the same estimate that
``colorlab.video.clips.propagate_clip`` uses at inference; computed in the data worker, a few ms
at 32 px), and, as synthetic_video's items, ``previous_frame`` (frame t-1 itself), its stack
``previous_context`` and ``previous_flow`` (2, size, size), that flow from frame t back to t-1 (for
``temporal.weight`` and ``hints.carry_self``). The window's first frame has no previous (all zeros,
nothing valid): it is the key frame.

Decoding: an item seeks to the keyframe at or before the first frame it needs and decodes forward to
the last; nothing is cached. Long keyframe intervals (x264's default is 250) make that slow: for
training, re-encode with short ones, e.g. ``ffmpeg -i in.mp4 -g 16 out.mp4``. A file that fails to
decode at training time is replaced by the next file's window and reported (``decode_failed``).
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from colorlab.data.files import Unusable, crop_array, existing_dir, scan_files, shorter_side_size, split_by_file
from colorlab.data.synthetic import WholeItems
from colorlab.data.video_synthetic import centred_stack, check_stack
from colorlab.io import summarize_skips

VIDEO_SUFFIXES = (".avi", ".m4v", ".mkv", ".mov", ".mp4", ".mpg", ".webm")
_CROP_STREAM = 31  # separates the crop draws from other uses of the seed


class UnreadableVideo(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class VideoFile:
    """An indexed video: its number of frames, their presentation timestamps in frame order (``pts``;
    None when the container gives none: windows are then decoded from the start) and its size."""

    path: Path
    frames: int
    pts: list[int] | None
    width: int
    height: int


def probe(path: Path) -> VideoFile:
    """Index one file by demuxing it (no decoding but its first frame); raises UnreadableVideo(reason)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UnreadableVideo("no video stream (audio only?)")
            stream = container.streams.video[0]
            pts, decoded = [], False
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's final flush packet
                    continue
                pts.append(packet.pts)
                if not decoded:
                    decoded = bool(packet.decode())
            if pts and not decoded:  # a decoder that holds frames back (B-frames) gives them at the flush
                decoded = bool(stream.codec_context.decode(None))
            width, height = stream.codec_context.width, stream.codec_context.height
    except av.error.FFmpegError as e:
        raise UnreadableVideo("unreadable video (corrupt or truncated)") from e
    if not pts or not decoded or not width or not height:
        raise UnreadableVideo("no decodable frame")
    ordered = None if None in pts else sorted(pts)
    return VideoFile(path, len(pts), ordered, width, height)


def scan_videos(root: Path, frames: int, what: str) -> tuple[list[VideoFile], Counter]:
    """The readable videos of at least ``frames`` frames under root (by path), and a Counter of skips."""
    def long_enough(path: Path) -> VideoFile:
        try:
            video = probe(path)
        except UnreadableVideo as e:
            raise Unusable(e.reason) from e
        if video.frames < frames:
            raise Unusable(f"shorter than data.frames={frames}")
        return video

    return scan_files(root, VIDEO_SUFFIXES, long_enough, f"videos in {what}", "not a video suffix")


def decode_frames(video: VideoFile, first: int, last: int, size: int) -> dict[int, np.ndarray]:
    """Frames ``first`` .. ``last`` (indices in the file) as uint8 (H', W', 3), the shorter side resized to
    ``size``: seeks to the keyframe at or before ``first`` and decodes forward. Raises UnreadableVideo
    when the file ends early or fails to decode."""
    import av

    width, height = resized(video, size)
    index_of = None if video.pts is None else {p: i for i, p in enumerate(video.pts)}
    out = {}
    try:
        with av.open(str(video.path)) as container:
            stream = container.streams.video[0]
            if index_of is not None and first > 0:
                container.seek(video.pts[first], stream=stream, backward=True)
            count = 0
            for frame in container.decode(stream):
                if index_of is None:
                    i, count = count, count + 1
                else:
                    i = index_of.get(frame.pts, -1)
                    if i < 0 or (not out and i > first):  # the seek landed past the window: decode from the start
                        return _decode_from_start(video, first, last, size)
                if first <= i:
                    out[i] = frame.reformat(width=width, height=height, format="rgb24",
                                            interpolation="AREA").to_ndarray()
                if i >= last:
                    break
    except av.error.FFmpegError as e:
        raise UnreadableVideo(f"{video.path}: decoding failed ({e})") from e
    if len(out) < last - first + 1:
        raise UnreadableVideo(f"{video.path}: {len(out)} of frames {first}..{last} decoded (truncated?)")
    return out


def resized(video: VideoFile, size: int) -> tuple[int, int]:
    """(width, height) of the video's frames with the shorter side resized to ``size``, aspect kept."""
    return shorter_side_size(video.width, video.height, size)


def _decode_from_start(video: VideoFile, first: int, last: int, size: int) -> dict[int, np.ndarray]:
    return decode_frames(VideoFile(video.path, video.frames, None, video.width, video.height), first, last, size)


def carry_previous(previous: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame t-1 (H, W, 3) uint8 carried onto frame t's grid along their backward Farneback flow: uint8
    (H, W, 3), zero where the flow fails the forward-backward check, that mask bool (H, W), and the
    flow float32 (2, H, W) (pixel offsets from frame t to t-1)."""
    from colorlab.flow import estimated_flows, warp

    pair = torch.from_numpy(np.stack([previous, current])).permute(0, 3, 1, 2)
    back, valid = estimated_flows(pair)[0]  # (2, H, W) from t to t-1, (1, H, W)
    warped = warp(pair[:1].float(), back[None].float())[0][0] * valid
    return (warped.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy(), valid[0].numpy(),
            back.float().numpy())


class VideoWindows(WholeItems):
    """The frames of windows of ``frames`` consecutive frames of ``videos``, one item per frame (see the
    module docstring): uint8 ``rgb`` (3, size, size), ``index``, ``item``, ``window``, ``frame`` (the
    index in its file), ``decode_failed`` (-1, or the file that failed and was replaced); optionally
    ``context`` (stack, 3, size, size); with ``previous`` also ``previous`` (3, size, size),
    ``previous_valid`` (1, size, size), ``previous_frame`` (3, size, size), ``previous_flow`` (2, size, size)
    and, with ``context``, ``previous_context``."""

    def __init__(self, videos: list[VideoFile], size: int, frames: int, train: bool, seed: int = 0,
                 stack: int = 1, previous: bool = False, skipped: Counter | None = None):
        check_stack(stack)
        self.videos, self.size, self.frames, self.train, self.seed = videos, size, frames, train, seed
        self.stack, self.previous = stack, previous
        self.skipped = skipped or Counter()  # files left out when the folders were indexed, by reason
        # (file, first frame) of every window
        self.windows = [(f, start) for f, v in enumerate(videos) for start in range(0, v.frames - frames + 1, frames)]
        self.first_window = {f: w for w, (f, _) in reversed(list(enumerate(self.windows)))}  # per file
        self.length = len(self.windows) * frames

    def _placement(self, window: int, video: VideoFile) -> tuple[int, int, bool]:
        """(top, left, flip) of a window's crop in its frames resized to shorter side ``size``."""
        w, h = resized(video, self.size)
        if not self.train:
            return (h - self.size) // 2, (w - self.size) // 2, False
        rng = np.random.default_rng([self.seed, _CROP_STREAM, window])
        top, left = rng.integers(0, h - self.size + 1), rng.integers(0, w - self.size + 1)
        return int(top), int(left), bool(rng.random() < 0.5)

    def _frames(self, window: int, t: int) -> dict[int, np.ndarray]:
        """The cropped frames (window positions -> uint8 (size, size, 3)) that frame t of a window needs."""
        f, start = self.windows[window]
        half = self.stack // 2
        first = t - half - (1 if self.previous and t > 0 else 0)  # also frame t-1's stack
        needed = {min(max(u, 0), self.frames - 1) for u in range(first, t + half + 1)}
        video = self.videos[f]
        decoded = decode_frames(video, start + min(needed), start + max(needed), self.size)
        place = self._placement(window, video)
        return {u: crop_array(decoded[start + u], self.size, *place) for u in needed}

    def __getitem__(self, index: int) -> dict:
        window, t = divmod(index, self.frames)
        failed = -1
        for _ in range(len(self.videos)):
            try:
                frames = self._frames(window, t)
                break
            except UnreadableVideo as e:  # indexed fine but does not decode: take the next file's window
                warnings.warn(f"skipped while decoding: {e}", stacklevel=2)
                f = self.windows[window][0]
                failed = f if failed < 0 else failed
                window = self.first_window[(f + 1) % len(self.videos)]
        else:
            raise RuntimeError("no video in the folder could be decoded")
        out = {"index": index, "item": index, "window": window, "frame": self.windows[window][1] + t,
               "decode_failed": failed, "rgb": torch.from_numpy(frames[t]).permute(2, 0, 1).contiguous()}
        if self.stack > 1:
            out["context"] = centred_stack(frames, t, self.stack, self.frames)
        if self.previous:
            if t == 0:
                prev, valid = np.zeros_like(frames[t]), np.zeros((self.size, self.size), bool)
                back = np.zeros((2, self.size, self.size), np.float32)
            else:
                prev, valid, back = carry_previous(frames[t - 1], frames[t])
            out["previous"] = torch.from_numpy(prev).permute(2, 0, 1).contiguous()
            out["previous_valid"] = torch.from_numpy(valid)[None]
            out["previous_flow"] = torch.from_numpy(back)
            out["previous_frame"] = torch.from_numpy(frames[max(t - 1, 0)]).permute(2, 0, 1).contiguous()
            if self.stack > 1:
                out["previous_context"] = centred_stack(frames, t - 1, self.stack, self.frames)
        return out


def video_folder_splits(size: int, seed: int, root: str | None, val_root: str | None = None,
                        val_fraction: float = 0.1, frames: int = 8, stack: int = 1, previous: bool = False):
    """(train, val) ``VideoWindows`` of the videos under ``root``, split by file: about ``val_fraction``
    of the files (at least one, never all) in val, chosen by a hash of the path; with ``val_root``
    every readable file of root trains and val_root's validate. The split is photos' (``split_by_file``)."""
    if frames < 2:
        raise ValueError(f"data.frames must be at least 2 consecutive frames per window. Got {frames}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"data.val_fraction must be in (0, 1). Got {val_fraction}")
    root_path = existing_dir(root, "data.root", "video files", "/data/clips")
    videos, skipped = scan_videos(root_path, frames, "data.root")
    if val_root is not None:
        val_root_path = existing_dir(val_root, "data.val_root", "video files", "/data/clips")
        val_videos, val_skipped = scan_videos(val_root_path, frames, "data.val_root")
        skipped += val_skipped
        train_videos = videos
    else:
        train_videos, val_videos = split_by_file(videos, lambda video: video.path, root_path, val_fraction)
    if skipped:
        warnings.warn(summarize_skips(skipped, f"data.root={root}"), stacklevel=2)
    if not train_videos or not val_videos:
        where = f"data.root={root}" + (f" and data.val_root={val_root}" if val_root is not None else "")
        raise ValueError(f"{where}: {len(train_videos)} readable training and {len(val_videos)} validation videos of "
                         f"at least data.frames={frames} frames ({sum(skipped.values())} files skipped: "
                         f"{dict(skipped)}); need one of each (two files under data.root, or data.val_root). "
                         f"Valid extensions: {list(VIDEO_SUFFIXES)}")
    return (VideoWindows(train_videos, size, frames, True, seed, stack, previous, skipped),
            VideoWindows(val_videos, size, frames, False, seed, stack, previous))
