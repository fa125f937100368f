"""Resuming: a run killed with SIGKILL and resumed ends with the same weights; bad checkpoints stop clearly."""

import subprocess
import sys
import time

import pytest
import torch
from torch.utils.data import DistributedSampler

from colorlab.data.datamodule import EpochShuffle, ResumableLoader

TIMEOUT = 300
COMMON = ["experiment=regression_l2", "logger=none", "data.num_workers=0", "data.train_size=1024", "data.val_size=16",
          "data.batch_size=16", "trainer.max_epochs=3", "trainer.deterministic=true",
          "trainer.enable_progress_bar=false", "trainer.num_sanity_val_steps=0"]
TINY = ["data.size=32", "net.width=8", "data.train_size=336", "data.batch_size=8"]  # 42 steps per epoch


def fit(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "colorlab.fit", *args], capture_output=True, text=True,
                            timeout=TIMEOUT)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_training_order_is_unchanged_and_resumes_at_the_next_batch():
    """One process: the permutation drawn from (seed, epoch) as before; DDP: torch's DistributedSampler order for
    each rank (what Lightning substitutes). A loader restored from the state saved after k batches of an epoch
    yields that epoch's remaining batches; at an epoch's end, the next epoch is whole."""
    dataset, seed, batch = list(range(50)), 3, 4
    for epoch in (0, 2):
        sampler = EpochShuffle(dataset, seed)
        sampler.set_epoch(epoch)
        expected = torch.randperm(50, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
        assert list(sampler) == expected
        for rank in (0, 1):
            ours, theirs = EpochShuffle(dataset, seed, 2, rank), DistributedSampler(dataset, 2, rank, True, seed)
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs)

    def loader(replicas=1, rank=0):
        return ResumableLoader(dataset, batch_size=batch, drop_last=True,
                               sampler=EpochShuffle(dataset, seed, replicas, rank))

    for replicas, rank in ((1, 0), (2, 1)):
        first = loader(replicas, rank)
        first.sampler.set_epoch(1)
        batches = iter(first)
        drawn = [next(batches).tolist() for _ in range(3)]
        state = first.state_dict()
        assert state == {"epoch": 1, "batches": 3}
        rest = [b.tolist() for b in batches]
        resumed = loader(replicas, rank)
        resumed.load_state_dict(state)
        resumed.sampler.set_epoch(1)  # Lightning sets the epoch before the first batch is drawn
        assert [b.tolist() for b in resumed] == rest and drawn + rest == [b.tolist() for b in first]
        assert resumed.state_dict() == {"epoch": 1, "batches": 3 + len(rest)}
        next_epoch = loader(replicas, rank)
        next_epoch.load_state_dict(resumed.state_dict())  # saved at the end of epoch 1
        next_epoch.sampler.set_epoch(2)
        whole = loader(replicas, rank)
        whole.sampler.set_epoch(2)
        assert [b.tolist() for b in next_epoch] == [b.tolist() for b in whole]


def wait_for_mid_epoch_checkpoint(last, process, steps_per_epoch: int, after_epoch: int = 1) -> int:
    """Poll ``last`` (written atomically) until it holds a step inside epoch ``after_epoch`` or later, not at its
    end; returns that step."""
    deadline, seen = time.monotonic() + TIMEOUT, None
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before a mid-epoch checkpoint"
        if last.is_file() and last.stat().st_mtime_ns != seen:
            seen = last.stat().st_mtime_ns
            step = torch.load(last, weights_only=True)["global_step"]
            if step > after_epoch * steps_per_epoch and step % steps_per_epoch:
                return step
        time.sleep(0.05)


@pytest.mark.slow
def test_sigkill_mid_epoch_and_resume_end_with_the_same_weights(tmp_path):
    """last.ckpt every checkpoint.every_n_steps steps; a run killed in the middle of its second epoch and resumed
    with ckpt_path=last continues that epoch at the next batch (the training order is restored with the position
    inside the epoch), so it ends with the weights of a run that never stopped, without Lightning's warning
    that the dataloader is not resumable."""
    common = [*COMMON, *TINY, "checkpoint.every_n_steps=5"]
    fit(*common, f"run_dir={tmp_path / 'full'}")
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "colorlab.fit", *common, f"run_dir={killed}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    wait_for_mid_epoch_checkpoint(last, process, steps_per_epoch=42)
    process.kill()  # SIGKILL: no handler, no cleanup
    process.wait()
    interrupted_at = torch.load(last, weights_only=True)["global_step"]
    assert 42 < interrupted_at < 126 and interrupted_at % 42, interrupted_at  # inside epoch 1 or 2
    resumed_run = fit(*common, f"run_dir={killed}", "ckpt_path=last")
    assert "not resumable" not in resumed_run.stderr, resumed_run.stderr[-3000:]
    full = torch.load(tmp_path / "full" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == full["global_step"] == 126
    for name, tensor in full["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name


def test_bad_checkpoints_stop_with_a_clear_error(tmp_path, tiny_overrides):
    from colorlab.config import compose
    from colorlab.fit import train

    run = tmp_path / "run"
    train(compose("regression_l2", tiny_overrides + ["trainer.max_epochs=1"]))
    last = run / "checkpoints" / "last.ckpt"
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    result = fit("experiment=regression_l2", *tiny_overrides, f"ckpt_path={truncated}", check=False)
    assert result.returncode == 2 and "cannot be read" in result.stderr and "truncated" in result.stderr
    result = fit("experiment=unet_bins", *tiny_overrides, f"ckpt_path={last}", check=False)
    assert result.returncode == 2 and "model.name=regression, this run has model.name=bins2d" in result.stderr
    result = fit("experiment=regression_l2", *tiny_overrides, f"run_dir={tmp_path / 'new'}", "ckpt_path=last",
                 check=False)
    assert result.returncode == 2 and "has no checkpoints/last.ckpt" in result.stderr
