"""flow=raft: torchvision's RAFT from a state dict given by path (random weights here: nothing is downloaded,
so these check the wrapper's conventions and errors, not RAFT's accuracy)."""

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from colorlab.video.__main__ import main, write_clip
from colorlab.video.flow import RaftFlow, flow_estimator


@pytest.fixture(scope="module")
def raft_small_weights(tmp_path_factory):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "raft_small_random.pth"
    torch.save(raft_small(weights=None, progress=False).state_dict(), path)
    return path


@pytest.fixture
def one_step(monkeypatch):
    """One refinement step instead of 12: the plumbing is the same, and CPU time a quarter."""
    monkeypatch.setattr("colorlab.video.flow.RAFT_ITERATIONS", 1)


def test_random_raft_small_from_a_path_gives_a_flow_of_the_frames_size(raft_small_weights, one_step):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 255, (2, 37, 53), dtype=np.uint8)  # odd sides, under RAFT's 128 px minimum
    estimate = flow_estimator("raft", str(raft_small_weights))
    assert isinstance(estimate, RaftFlow) and estimate.name == "raft-small"  # told apart by the keys
    flow = estimate(a, b)
    assert flow.dtype == np.float32 and flow.shape == (2, 37, 53) and np.isfinite(flow).all()


def test_raft_large_is_recognised_by_its_keys(tmp_path):
    from torchvision.models.optical_flow import raft_large

    torch.save(raft_large(weights=None, progress=False).state_dict(), tmp_path / "large.pth")
    assert flow_estimator("raft", tmp_path / "large.pth").name == "raft-large"


class StandIn(torch.nn.Module):
    """RAFT's call signature; returns a known flow (dx, dy) = ``value`` inside the unpadded ``inner`` size and
    1000 in the padding, and records its inputs."""

    def __init__(self, value, inner):
        super().__init__()
        self.value, self.inner, self.seen = value, inner, []
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, image1, image2, num_flow_updates=12):
        assert num_flow_updates == 12
        self.seen.append((image1, image2))
        flow = torch.full((1, 2, *image1.shape[-2:]), 1000.0)
        flow[:, 0, :self.inner[0], :self.inner[1]] = self.value[0]
        flow[:, 1, :self.inner[0], :self.inner[1]] = self.value[1]
        return [torch.zeros_like(flow), flow]  # RAFT returns every iteration's flow, the last one final


@pytest.mark.parametrize("size, inner, network_size", [
    ((130, 141), (130, 141), (136, 144)),  # padded to multiples of 8, the flow cropped back
    ((37, 49), (128, 170), (128, 176)),  # upscaled to RAFT's 128 px minimum (then padded), the flow scaled back
])
def test_raft_wrapper_conventions_against_a_stand_in(raft_small_weights, size, inner, network_size):
    expected = (3.5, -2.0)  # (dx, dy) in pixels of the frames; in pixels of the (upscaled) network input:
    value = (expected[0] * inner[1] / size[1], expected[1] * inner[0] / size[0])
    estimate = flow_estimator("raft", raft_small_weights)
    estimate.model = StandIn(value, inner)
    a = np.zeros(size, np.uint8)
    b = np.full(size, 255, np.uint8)
    a[-1, -1] = 255  # a corner pixel the replicate padding copies to the right and bottom
    flow = estimate(a, b)
    (image1, image2), = estimate.model.seen
    assert image1.shape == image2.shape == (1, 3, *network_size)  # gray as RGB, sides multiples of 8
    assert image1.min() >= -1 and image1.max() <= 1 and image2.min() == image2.max() == 1  # uint8 -> [-1, 1]
    assert image1[0, 0, 0, 0] == -1 and image1[0, :, -1, -1].eq(1).all()  # a first, padding replicates
    assert torch.equal(image1[:, 0], image1[:, 2])
    assert flow.shape == (2, *size) and flow.dtype == np.float32  # no padding's 1000 leaks in
    np.testing.assert_allclose(flow[0], expected[0], atol=1e-4)  # channel 0 = dx (columns)
    np.testing.assert_allclose(flow[1], expected[1], atol=1e-4)  # channel 1 = dy (rows)


@pytest.mark.parametrize("case, error, message", [
    ("missing", FileNotFoundError, "no such file"),
    ("text", ValueError, "not a torch file"),
    ("not_tensors", ValueError, "not a state dict of tensors"),
    ("linear", ValueError, "fit neither raft-small nor raft-large"),
    ("shapes", ValueError, "has raft-small's keys but not its shapes"),
])
def test_bad_weights_files_are_named(tmp_path, raft_small_weights, case, error, message):
    path = tmp_path / f"{case}.pth"
    if case == "text":
        path.write_text("not weights")
    elif case == "not_tensors":
        torch.save({"epoch": 3}, path)
    elif case == "linear":
        torch.save(torch.nn.Linear(2, 3).state_dict(), path)
    elif case == "shapes":
        state = torch.load(raft_small_weights, weights_only=True)
        name = next(iter(state))
        state[name] = torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 1)
        torch.save(state, path)
    with pytest.raises(error, match=message) as info:
        flow_estimator("raft", path)
    assert str(path) in str(info.value) and "raft_small or raft_large" in str(info.value)


def test_unknown_flow_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: farneback, raft"):
        flow_estimator("pwc")


@pytest.fixture
def clip(tmp_path):
    frames = np.zeros((2, 27, 41, 3), np.uint8)
    for t in range(2):
        frames[t, :, 6 * t:6 * t + 10] = 200  # a bar moving 6 px per frame
    write_clip(tmp_path / "clip.mp4", frames, Fraction(8))
    return tmp_path / "clip.mp4"


@pytest.mark.parametrize("extra, message", [
    (["flow=raft"], "flow=raft needs raft_weights=PATH"),
    (["flow=raft", "raft_weights=nowhere.pth"], "nowhere.pth: no such file"),
    (["flow=pwc"], "valid: farneback, raft"),
    (["raft_weights=nowhere.pth"], "raft_weights= is for flow=raft"),
])
def test_command_refuses_bad_flow_options_before_writing(tmp_path, untrained_video, clip, extra, message, capsys):
    out = tmp_path / "out"
    assert main([f"ckpt={untrained_video['video_propagate']}", f"input={clip}", f"out={out}", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("colorlab.video: error: ") and "\n" not in err and message in err, err
    assert not out.exists()


def test_command_with_raft_propagates_measures_and_records_it(tmp_path, untrained_video, clip, raft_small_weights,
                                                              one_step, monkeypatch):
    sizes = []
    call = RaftFlow.__call__
    monkeypatch.setattr(RaftFlow, "__call__", lambda self, a, b: sizes.append(a.shape) or call(self, a, b))
    out = tmp_path / "out"
    assert main([f"ckpt={untrained_video['video_propagate']}", f"input={clip}", f"out={out}", "flow=raft",
                 f"raft_weights={raft_small_weights}"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["flow"] == "raft-small" and np.isfinite(metrics["warp_error"])
    # forward and backward: for propagation at the checkpoint's 32 px, for the warp error at the clip's size
    assert sorted(sizes) == [(27, 41), (27, 41), (32, 32), (32, 32)]
