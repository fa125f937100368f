"""litdata shards: colorlab.prepare writes them, data=shards streams them, DDP ranks see disjoint samples."""

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from tests.corpus import colour_photo

pytest.importorskip("litdata")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    photos = root / "photos"
    photos.mkdir()
    for i in range(24):
        Image.fromarray(colour_photo(i)).save(photos / f"{i:02d}.jpg", quality=95)
    (photos / "broken.jpg").write_text("not an image")
    result = subprocess.run([sys.executable, "-m", "colorlab.prepare", f"data.root={photos}", f"out={root / 'out'}",
                             "size=40", "data.val_fraction=0.25"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return root / "out"


def _stream_one_epoch(rank: int, world_size: int, path: str, port: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    from litdata import StreamingDataLoader

    from colorlab.data.shards import ShardCrops

    loader = StreamingDataLoader(ShardCrops(path, size=16, scale=None, train=True), batch_size=2, num_workers=0,
                                 drop_last=True)
    queue.put((rank, [int(i) for batch in loader for i in batch["item"]]))
    dist.barrier()
    dist.destroy_process_group()


def test_two_ddp_ranks_never_see_the_same_sample(shards):
    context = mp.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_stream_one_epoch, args=(rank, 2, str(shards / "train"), "29533", queue))
                 for rank in range(2)]
    for p in processes:
        p.start()
    seen = dict(queue.get(timeout=120) for _ in processes)
    for p in processes:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert len(seen[0]) == len(seen[1]) > 0
    assert not set(seen[0]) & set(seen[1])  # no sample twice in an epoch across ranks
    assert len(set(seen[0])) == len(seen[0]) and len(set(seen[1])) == len(seen[1])


def test_training_streams_shards(shards, tiny_overrides):
    from colorlab.config import compose
    from colorlab.fit import train

    synthetic_only = ("data.train_size", "data.val_size")
    overrides = [o for o in tiny_overrides if not o.startswith(synthetic_only)]
    overrides += ["data=shards", f"data.path={shards}", "data.size=32", "trainer.max_epochs=1"]
    metrics = train(compose("regression_l2", overrides))
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))


def test_missing_shards_are_a_clear_error(tmp_path):
    from colorlab.data.shards import shards_splits

    with pytest.raises(FileNotFoundError, match="no litdata shards.*colorlab.prepare"):
        shards_splits(str(tmp_path), size=16, seed=0)


class _RecordItems:
    """A Lightning callback recording the items of each training batch; saves a checkpoint mid-epoch."""

    def __new__(cls, save_at_step=None, path=None):
        import pytorch_lightning as pl

        class Recorder(pl.Callback):
            def __init__(self):
                self.items = []

            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                self.items.append(sorted(int(i) for i in batch["item"]))

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                if save_at_step is not None and trainer.global_step == save_at_step:
                    trainer.save_checkpoint(path)

        return Recorder()


def test_shards_resume_mid_epoch_where_they_stopped(shards, tiny_overrides, tmp_path):
    from colorlab.config import compose
    from colorlab.fit import train

    synthetic_only = ("data.train_size", "data.val_size", "run_dir")
    base = [o for o in tiny_overrides if not o.startswith(synthetic_only)]
    base += ["data=shards", f"data.path={shards}", "data.size=32", "data.batch_size=2", "trainer.max_epochs=1"]
    middle = tmp_path / "mid.ckpt"
    full = _RecordItems(save_at_step=3, path=middle)
    train(compose("regression_l2", base + [f"run_dir={tmp_path / 'a'}"]), [full])
    resumed = _RecordItems()
    train(compose("regression_l2", base + [f"run_dir={tmp_path / 'b'}", f"ckpt_path={middle}"]), [resumed])
    assert len(full.items) > 4
    assert resumed.items == full.items[3:]  # the rest of the epoch, in the same order, nothing repeated


@pytest.mark.parametrize("train_size", [7, 45])
def test_train_size_sets_the_samples_per_epoch_of_shards(shards, train_size):
    """Fewer samples than the shards hold (a subset), or more (whole repeats plus a part): an epoch holds
    ``train_size`` samples (litdata rounds the part down per chunk file), with ids that index its samples."""
    import json

    from colorlab.data.shards import shards_splits

    train, _ = shards_splits(str(shards), size=16, seed=0, train_size=train_size)
    items = [train[i]["item"] for i in range(len(train))]
    n_chunks = len(json.loads((shards / "train" / "index.json").read_text())["chunks"])
    assert train_size - n_chunks <= len(train) <= train_size
    assert sorted(items) == list(range(train.n_items))
    first = train.whole_image(items[-1])  # the cache id of the last sample decodes to a whole photo
    assert first.dtype == torch.uint8 and first.shape[0] == 3 and min(first.shape[1:]) >= 16
