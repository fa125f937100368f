import warnings

import numpy as np
import pytest
import torch

from colorlab.color import AB_NORM, uint8_to_lab
from colorlab.data import ColorDataModule
from colorlab.data.photos import folder_splits, samples_splits, scan_folder
from colorlab.data.synthetic import BIMODAL_AB, SyntheticScenes
from tests.corpus import write_corpus


def test_synthetic_items_shapes_and_determinism():
    dataset = SyntheticScenes(size=48, length=10, seed=3, split="train")
    item = dataset[4]
    assert item["rgb"].shape == (3, 48, 48) and item["rgb"].dtype == torch.uint8
    assert item["bimodal"].shape == (1, 48, 48) and item["bimodal"].dtype == torch.bool
    assert item["bimodal"].any()
    assert torch.equal(SyntheticScenes(48, 10, 3, "train")[4]["rgb"], item["rgb"])
    assert not torch.equal(SyntheticScenes(48, 10, 4, "train")[4]["rgb"], item["rgb"])
    assert not torch.equal(SyntheticScenes(48, 10, 3, "val")[4]["rgb"], item["rgb"])


def test_bimodal_shape_takes_two_opposite_colours_with_configured_odds():
    dataset = SyntheticScenes(size=32, length=400, seed=0, split="val", p_first=0.7)
    firsts = 0
    for i in range(len(dataset)):
        item = dataset[i]
        ab = uint8_to_lab(item["rgb"][None])[0, 1:]
        mean_ab = ab[:, item["bimodal"][0]].mean(dim=1)
        # the colours survive the trip through 8-bit sRGB: they are in gamut
        distances = [float((mean_ab - torch.tensor(sign * np.array(BIMODAL_AB))).norm()) for sign in (1, -1)]
        assert min(distances) < 3.0, distances
        firsts += distances[0] < distances[1]
    assert abs(firsts / len(dataset) - 0.7) < 0.07  # binomial sd at n=400 is 0.023


def test_synthetic_rejects_bad_probability():
    with pytest.raises(ValueError, match="p_first must be in"):
        SyntheticScenes(32, 4, 0, "train", p_first=0.2)


def test_datamodule_converts_to_lab_on_transfer_and_replaces_gray_in_training():
    dm = ColorDataModule(name="synthetic", size=32, batch_size=4, num_workers=0, seed=0,
                         train_size=8, val_size=4, p_first=0.7)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    batch["rgb"][1] = 128  # make one image gray
    out = dm.on_after_batch_transfer({k: v.clone() for k, v in batch.items()}, 0)
    assert out["l"].shape == (4, 1, 32, 32) and out["ab"].shape == (4, 2, 32, 32)
    assert out["l"].dtype == torch.float32 and out["l"].abs().max() <= 0.5
    torch.testing.assert_close(out["ab"] * AB_NORM, uint8_to_lab(batch["rgb"])[:, 1:])
    assert len(out["ab"]) == 4  # validation keeps gray images

    class Training:
        training = True

    dm.trainer = Training()
    out = dm.on_after_batch_transfer({k: v.clone() for k, v in batch.items()}, 0)
    assert out["index"].tolist() == [0, 0, 2, 3] and dm.gray_replaced == 1  # by the colour image before it
    assert torch.equal(out["ab"][1], out["ab"][0]) and out["has_colour"] == 1


def test_gray_images_are_replaced_by_colour_images_of_their_batch():
    from colorlab.data.datamodule import replace_gray

    batch = {"index": torch.arange(6), "ab": torch.arange(6.0)[:, None]}
    for gray, source in (([1, 1, 0, 0, 1, 0], [2, 2, 2, 3, 3, 5]),  # leading gray ones: the first colour one
                         ([0, 0, 0, 0, 0, 0], [0, 1, 2, 3, 4, 5])):
        out = replace_gray(batch, torch.tensor(gray, dtype=torch.bool))
        assert out["index"].tolist() == source and torch.equal(out["ab"], batch["ab"][source])
        assert out["has_colour"] == 1
    out = replace_gray(batch, torch.ones(6, dtype=torch.bool))  # nothing to learn from: kept, loss zeroed
    assert out["index"].tolist() == list(range(6)) and out["has_colour"] == 0


@pytest.mark.parametrize("experiment", ["unet_bins", "hints_unet", "fusion_bins112"])
def test_a_batch_whose_files_all_failed_gives_every_parameter_a_zero_gradient(experiment, tiny_overrides):
    """Under DDP every rank must reach the gradient all-reduce: a rank whose step returned None (no loss, no
    backward) would leave the others waiting forever."""
    from colorlab.config import compose
    from colorlab.data.datamodule import replace_gray
    from colorlab.models import build_model, placeholder_prior

    cfg = compose(experiment, tiny_overrides)
    model = build_model(cfg, placeholder_prior(cfg))
    empty = {"l": torch.zeros(0, 1, 32, 32), "ab": torch.zeros(0, 2, 32, 32), "rgb": torch.zeros(0, 3, 32, 32)}
    loss = model.training_step(replace_gray(empty, torch.zeros(0, dtype=torch.bool)), 0)
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert loss.item() == 0 and trainable
    assert all(p.grad is not None and not p.grad.any() for p in trainable)


def test_host_side_work_before_the_transfer_gives_the_same_batch_and_counts():
    """Lightning calls on_before_batch_transfer (host) then on_after_batch_transfer (device); DeviceBatches
    calls the latter alone. Decode failures and embedding lookups, done on the host when they can, give the
    same batch and the same counts either way, in training and in validation."""
    dm = ColorDataModule(name="synthetic", size=16, batch_size=4, num_workers=0, seed=0,
                         train_size=8, val_size=4, p_first=0.7)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    batch["rgb"][1] = 128  # gray: replaced by image 0 in training
    batch["decode_failed"] = torch.tensor([-1, 5, 7, -1])  # items 1 and 2 replaced files 5 and 7
    tables = {"train": torch.randn(8, 3), "val": torch.randn(8, 3)}
    dm.embeddings = dict(tables)

    class Trainer:
        def __init__(self, training):
            self.training = training

    for training, kept, failures in ((True, [0, 0, 2, 3], {5, 7}), (False, [0, 1, 2, 3], set())):
        outs = []
        for before in (False, True):
            dm.trainer, dm.decode_failures, dm.gray_count = Trainer(training), set(), torch.zeros((), dtype=torch.long)
            b = {k: v.clone() for k, v in batch.items()}
            if before:
                b = dm.on_before_batch_transfer(b, 0)
                assert "decode_failed" not in b and b["embedding"].shape == (4, 3)
            outs.append(dm.on_after_batch_transfer(b, 0))
            assert dm.decode_failures == failures and dm.gray_replaced == int(training)
        assert outs[0].keys() == outs[1].keys() and "decode_failed" not in outs[0]
        for key in outs[0]:
            assert torch.equal(outs[0][key], outs[1][key]), key
        assert outs[0]["index"].tolist() == kept
        assert torch.equal(outs[0]["embedding"], tables["train" if training else "val"][kept])


def test_samples_source_splits_by_photo():
    train, val = samples_splits(size=32, scale=64, seed=0, train_size=6, val_size=3, val_photos=["chelsea"])
    assert len(train) == 6 and len(val) == 3
    assert train[0]["rgb"].shape == (3, 32, 32)
    assert torch.equal(val[1]["rgb"], val[1]["rgb"])  # validation crops are deterministic
    with pytest.raises(ValueError, match="proper subset"):
        samples_splits(size=32, scale=64, seed=0, train_size=6, val_size=3, val_photos=["lena"])


def test_folder_skips_and_counts_bad_files(tmp_path):
    files = write_corpus(tmp_path / "photos")
    paths, skipped = scan_folder(tmp_path / "photos")
    assert skipped == {"empty file": 1, "not an image": 2, "decompression bomb": 1, "grayscale": 2}
    assert files["truncated.jpg"] in paths  # only detectable by decoding: skipped by the dataset
    with pytest.warns(UserWarning, match="6 files skipped"):
        train, val = folder_splits(str(tmp_path / "photos"), size=16, scale=24, seed=0, val_fraction=0.2)
    assert len(train) + len(val) == len(paths) and len(val) >= 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        items = [d[i] for d in (train, val) for i in range(len(d))]
    assert all(item["rgb"].shape == (3, 16, 16) for item in items)
    assert [str(w.message) for w in caught if "truncated.jpg" in str(w.message)]


def test_folder_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.root=.*is not a directory"):
        folder_splits(str(tmp_path / "nope"), size=16, scale=24, seed=0)
    with pytest.raises(ValueError, match="data.root is not set"):
        folder_splits(None, size=16, scale=24, seed=0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="holds 0 usable colour images"):
        folder_splits(str(tmp_path / "empty"), size=16, scale=24, seed=0)


def test_training_on_the_bad_input_corpus_continues_and_reports_what_was_left_out(tmp_path):
    import json

    from PIL import Image

    from colorlab.config import compose
    from colorlab.fit import train
    from tests.corpus import colour_photo

    write_corpus(tmp_path / "photos")  # every odd file in the training tree
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "val").mkdir()
    for i in range(2):
        Image.fromarray(colour_photo(100 + i)).save(tmp_path / "val" / f"{i}.png")
    overrides = ["data=folder", f"data.root={tmp_path / 'photos'}", f"data.val_root={tmp_path / 'val'}",
                 "data.size=16", "data.batch_size=2", "data.num_workers=0", "logger=none", "trainer.max_epochs=2",
                 "trainer.enable_progress_bar=false", f"run_dir={tmp_path / 'run'}"]
    with pytest.warns(UserWarning, match="files skipped"):
        metrics = train(compose("regression_l2", overrides))
    assert metrics["val/loss"] == metrics["val/loss"]  # trained and validated: not NaN
    skipped = json.loads((tmp_path / "run" / "metrics.json").read_text())["data/skipped"]
    # the truncated JPEG passes the header scan, fails when decoded, and is counted once over 2 epochs
    assert skipped == {"empty file": 1, "not an image": 2, "decompression bomb": 1, "grayscale": 2,
                       "not an image suffix": 1, "corrupt image data": 1}


def test_num_workers_auto_is_sized_from_where_training_runs(monkeypatch):
    from types import SimpleNamespace

    from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    from colorlab.data.datamodule import trainer_workers, worker_count

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)  # macOS has none
    assert worker_count("auto", on_gpu=False) == 2  # the CPU's step threads use the cores (as before: 2)
    assert worker_count("auto", on_gpu=True) == 15  # one GPU on 16 cores: all but the training process
    assert worker_count("auto", on_gpu=True, local_processes=4) == 3  # four ranks on this node share them
    assert worker_count("auto", on_gpu=True, cores_per_process=8) == 7  # srun gave each task 8
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert worker_count("auto", on_gpu=True) == 16  # at most 16
    assert worker_count(0, on_gpu=True) == 0 and worker_count(5, on_gpu=False) == 5  # a number is kept
    for bad in (-1, "many", 2.5, True):
        with pytest.raises(ValueError, match="data.num_workers must be a number of worker processes >= 0, or auto"):
            worker_count(bad, on_gpu=False)
    with pytest.raises(ValueError, match="data.num_workers must be"):
        ColorDataModule("synthetic", size=16, batch_size=4, num_workers="lots", seed=0)

    # which share a Trainer's processes get: srun tasks their SLURM_CPUS_PER_TASK; ranks that Lightning starts
    # on one node (sweep_agent.sbatch: SLURM_JOB_NAME=interactive, 32 cores, 4 GPUs) a quarter of the cores
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(32)), raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    monkeypatch.setattr(SLURMEnvironment, "creates_processes_externally", property(lambda self: True))

    def trainer(environment, devices=4):
        return SimpleNamespace(num_devices=devices, strategy=SimpleNamespace(
            root_device=torch.device("cuda", 0), cluster_environment=environment))

    assert trainer_workers("auto", trainer(SLURMEnvironment())) == 7
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "32")
    assert trainer_workers("auto", trainer(LightningEnvironment())) == 7  # not 16 each: 64 workers on 32 cores
    assert trainer_workers(3, trainer(LightningEnvironment())) == 3


@pytest.mark.parametrize("decode", ["cpu", "gpu"], ids=["decoded-by-workers", "decoded-on-device"])
def test_folder_training_crops_are_drawn_from_the_epoch_not_the_workers(tmp_path, decode):
    """Crops of (seed, epoch, index): 0 or 2 workers give the same batches (they did not: each worker drew from
    its own stream), and the next epoch other crops of the same photos."""
    from tests.test_draft import photo_like, save_jpeg

    for split, n in (("train", 6), ("val", 2)):
        (tmp_path / split).mkdir()
        for i in range(n):
            save_jpeg(tmp_path / split / f"{i}.jpg", photo_like(120, 90, seed=10 * n + i))

    def epoch_batches(workers, epoch):
        dm = ColorDataModule("folder", size=32, batch_size=3, num_workers=workers, seed=0, decode=decode,
                             root=str(tmp_path / "train"), val_root=str(tmp_path / "val"))
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [dm.on_before_batch_transfer(batch, 0) for batch in loader]

    first, again = epoch_batches(0, 1), epoch_batches(2, 1)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["index"], b["index"]) and torch.equal(a["rgb"], b["rgb"])
    later = {int(i): rgb for b in epoch_batches(0, 2) for i, rgb in zip(b["index"], b["rgb"], strict=True)}
    now = {int(i): rgb for b in first for i, rgb in zip(b["index"], b["rgb"], strict=True)}
    assert sorted(later) == sorted(now) and sum(not torch.equal(now[i], later[i]) for i in now) >= 4
