"""A training step must not read the device on the host: on a GPU each read makes the host wait for the
queued work to finish before it can queue the next step, and the device idles while the host prepares
it (issue 29). On the CPU nothing waits, but the reads can still be seen: every value a tensor hands to
Python goes through ``aten._local_scalar_dense``, and shapes that depend on values go through ops such
as ``nonzero``. This test records them during training steps; tests/test_gpu.py checks the same on a GPU
with CUDA's own sync detection, which also sees copies to the host."""

import traceback

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from colorlab.config import compose
from colorlab.fit import train

VALUE_READS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
               "aten._unique2.default", "aten.unique_consecutive.default", "aten.equal.default",
               "aten.is_nonzero.default"}


def host_read(func, args, kwargs) -> bool:
    name = str(func)
    if name in VALUE_READS:
        return True
    if name == "aten.repeat_interleave.Tensor":  # without output_size its length is read on the host
        return kwargs.get("output_size") is None
    if name.startswith("aten.index.Tensor"):  # boolean-mask indexing: a shape that depends on the mask
        return any(t is not None and t.dtype == torch.bool for t in args[1])
    return False


class HostReads(TorchDispatchMode):
    """Records where host reads happen while ``on``; reads inside torch.optim are left out: AdamW keeps
    its step count on the host (unless fused or capturable), so reading it never waits for a GPU."""

    def __init__(self):
        super().__init__()
        self.on, self.reads = False, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.on and host_read(func, args, kwargs):
            stack = traceback.extract_stack()[:-1]
            caller = next(f for f in reversed(stack) if "/torch/_" not in f.filename)  # past torch's wrappers
            if "/torch/optim/" not in caller.filename:  # the optimizer's own code (its step runs ours too)
                ours = [f"{f.filename.rsplit('/', 2)[-2]}/{f.filename.rsplit('/', 1)[-1]}:{f.lineno}"
                        for f in stack if any(part in f.filename for part in ("colorlab", "lightning", "/tests/"))]
                self.reads.append(f"{func} at {' <- '.join(reversed(ours[-4:]))}")
        return func(*args, **kwargs)


class Window(pl.Callback):
    """Watches from the end of training step 2 (the first builds the optimizer's state, and the progress
    bar reads the loss once) to the end of training; the run has no validation."""

    def __init__(self, mode: HostReads):
        self.mode = mode

    def on_train_batch_end(self, trainer, *args):
        self.mode.on = trainer.global_step >= 2

    def on_train_end(self, trainer, *args):
        self.mode.on = False


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["unet_bins", "hints_unet", "siggraph17", "video_propagate",
                                        "fusion_bins112"])
def test_training_steps_read_nothing_on_the_host(experiment, tiny_overrides):
    mode = HostReads()
    cfg = compose(experiment, [*tiny_overrides, "trainer.max_steps=6", "data.train_size=64", "data.batch_size=4",
                               "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
                               "trainer.enable_progress_bar=true", "checkpoint.every_n_steps=0"])
    with mode:
        train(cfg, callbacks=[Window(mode)])
    assert not mode.reads, "\n".join(dict.fromkeys(mode.reads))


def test_the_probe_sees_reads_and_their_place():
    """The probe itself: a read of a value, a mask-shaped index and repeat_interleave without its length
    are seen; the same work with static shapes is not."""
    x = torch.arange(6.0)
    mode = HostReads()
    with mode:
        mode.on = True
        _ = x[x > 2]
        _ = bool(x.sum() > 0)
        _ = torch.repeat_interleave(torch.tensor([1, 2]))
        static = torch.where(x > 2, x, 0.0).cumsum(0)
        _ = torch.repeat_interleave(torch.arange(2), torch.tensor([1, 2]), output_size=3)
    assert len(mode.reads) == 3 and all("test_host_sync.py" in read for read in mode.reads), mode.reads
    assert static[-1] == 12
