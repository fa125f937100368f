"""A training step must not make the host wait for the device: on a GPU each wait lets the queue run dry
before the host can queue the next step, and the device idles while the host prepares it (issue 29). On
the CPU nothing waits, but the causes can still be seen: every value a tensor hands to Python goes
through ``aten._local_scalar_dense``, shapes that depend on values go through ops such as ``nonzero``,
a tensor made from Python data (``torch.tensor(...)``, a blocking copy from the host when it is made for
a GPU) goes through ``aten.lift_fresh``, and ``tolist``, ``numpy`` and ``cpu`` are watched directly. This
test records them during training steps; tests/test_gpu.py checks the same on a GPU with CUDA's own sync
detection."""

import traceback

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from colorlab.config import compose
from colorlab.fit import train

VALUE_READS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
               "aten._unique2.default", "aten.unique_consecutive.default", "aten.equal.default",
               "aten.is_nonzero.default", "aten.bincount.default", "aten.histc.default",
               "aten.unique_dim.default"}
# made from Python data or copied to the host: a wait on a GPU when it happens on the device's side of the
# step (the dataset and on_before_batch_transfer make host tensors from Python data as they should)
FROM_PYTHON = "aten.lift_fresh.default"
HOST_COPIES = ("tolist", "numpy", "cpu")
DEVICE_SIDE = {"on_after_batch_transfer", "training_step"}


def on_the_device_side(stack) -> bool:
    return any(frame.name in DEVICE_SIDE for frame in stack)


def host_read(func, args, kwargs) -> bool:
    name = str(func)
    if name in VALUE_READS:
        return True
    if name == FROM_PYTHON:
        return on_the_device_side(traceback.extract_stack())
    if name == "aten.repeat_interleave.Tensor":  # without output_size its length is read on the host
        return kwargs.get("output_size") is None
    if name.startswith(("aten.index.Tensor", "aten.index_put")):  # boolean masks: shapes from values
        return any(t is not None and t.dtype == torch.bool for t in args[1])
    return False


def outside_the_optimizer(stack) -> bool:
    """Not the optimizer's own code (its step runs the training step too, inside a closure): AdamW keeps
    its step count on the host unless fused or capturable, so reading it never waits for a GPU."""
    caller = next(f for f in reversed(stack) if "/torch/_" not in f.filename)  # past torch's wrappers
    return "/torch/optim/" not in caller.filename or caller.filename.endswith("lr_scheduler.py")


def where(stack) -> str:
    ours = [f"{f.filename.rsplit('/', 2)[-2]}/{f.filename.rsplit('/', 1)[-1]}:{f.lineno}"
            for f in stack if any(part in f.filename for part in ("colorlab", "lightning", "/tests/"))]
    return " <- ".join(reversed(ours[-4:]))


class HostReads(TorchDispatchMode):
    """Records where the host would wait while ``on`` (outside the optimizer's own code)."""

    def __init__(self):
        super().__init__()
        self.on, self.reads = False, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.on and host_read(func, args, kwargs):
            self._record(str(func), device_side_only=False)
        return func(*args, **kwargs)

    def _record(self, what: str, device_side_only: bool) -> None:
        stack = traceback.extract_stack()[:-2]  # from the caller of __torch_dispatch__ / watched
        if (not device_side_only or on_the_device_side(stack)) and outside_the_optimizer(stack):
            self.reads.append(f"{what} at {where(stack)}")

    def __enter__(self):
        self.saved = {name: getattr(torch.Tensor, name) for name in HOST_COPIES}
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, self._watched(name, method))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, method in self.saved.items():
            setattr(torch.Tensor, name, method)
        return super().__exit__(*exc)

    def _watched(self, name, method):
        def watched(tensor, *args, **kwargs):
            if self.on:
                self._record(f"Tensor.{name}", device_side_only=True)
            return method(tensor, *args, **kwargs)
        return watched


class Window(pl.Callback):
    """Watches from the end of training step 2 (the first builds the optimizer's state, and the progress
    bar reads the loss once) to the end of the last (then the run saves last.ckpt); no validation."""

    def __init__(self, mode: HostReads):
        self.mode = mode

    def on_train_batch_end(self, trainer, *args):
        self.mode.on = 2 <= trainer.global_step < trainer.max_steps


@pytest.mark.slow
@pytest.mark.parametrize("experiment, extra", [
    ("unet_bins", ["data.render=device"]),  # scenes painted in on_after_batch_transfer, as on a GPU
    ("eccv16_full", []), ("hints_unet", []), ("siggraph17", []), ("video_propagate", []),
    ("fusion_bins112", []),
    # bin models that decode inside the step: the temporal loss (grid decode of frequent bins; 1D bins)
    ("unet_bins", ["data=synthetic_video", "data.previous=true", "temporal.weight=0.5"]),
    ("bins1d", ["data=synthetic_video", "data.previous=true", "temporal.weight=0.5"]),
])
def test_training_steps_read_nothing_on_the_host(experiment, extra, tiny_overrides):
    mode = HostReads()
    cfg = compose(experiment, [*tiny_overrides, "trainer.max_steps=6", "data.train_size=64", "data.batch_size=4",
                               "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0",
                               "trainer.enable_progress_bar=true", "checkpoint.every_n_steps=0", *extra])
    with mode:
        train(cfg, callbacks=[Window(mode)])
    assert not mode.reads, "\n".join(dict.fromkeys(mode.reads))


def test_the_probe_sees_reads_and_their_place():
    """The probe itself: a read of a value, a mask-shaped index, repeat_interleave without its length, a
    tensor from Python data and a copy to the host are seen; the same work with static shapes is not."""
    x, repeats = torch.arange(6.0), torch.arange(1, 3)
    mode = HostReads()
    with mode:
        mode.on = True
        _ = x[x > 2]
        _ = bool(x.sum() > 0)
        _ = torch.repeat_interleave(repeats)
        training_step(x)  # a tensor from Python data and a copy to the host, on the device's side
        _ = torch.tensor([1.0, 2.0])  # the same elsewhere: host tensors, not waits
        _ = x.tolist()
        static = torch.where(x > 2, x, 0.0).cumsum(0)
        _ = torch.repeat_interleave(torch.arange(2), repeats, output_size=3)
        mode.on = False
        unwatched = x.tolist()
    assert len(mode.reads) == 5 and all("test_host_sync.py" in read for read in mode.reads), mode.reads
    assert static[-1] == 12 and unwatched == [0, 1, 2, 3, 4, 5] and torch.Tensor.tolist is mode.saved["tolist"]


def training_step(x):
    return torch.tensor([1.0]), x.tolist()


def test_progress_bar_reads_the_loss_every_log_interval_and_once_per_step():
    from types import SimpleNamespace

    from colorlab.loggers import ProgressBar

    def shown(every, steps):
        bar, out = ProgressBar(), []
        for step in steps:
            trainer = SimpleNamespace(training=True, global_step=step, log_every_n_steps=every, loggers=[],
                                      progress_bar_metrics={}, callback_metrics={"train/loss": torch.tensor(step)})
            out.append(bar.get_metrics(trainer, None)["train/loss"])
        return out

    assert shown(3, range(1, 8)) == [1, 1, 3, 3, 3, 6, 6]  # the first step, then every 3rd
    assert shown(3, [3, 3, 3]) == [3, 3, 3]  # accumulated micro-batches of one step: read once
    assert shown(0, [1, 2, 50, 51]) == [1, 1, 50, 50]  # log_every_n_steps=0 (no logging): every 50
