"""Synthetic scenes painted on the training device (``data.render=device``) against the numpy painter: the same
scenes from the same draws, the masks to the pixel and RGB within one level; training runs on them."""

import numpy as np
import pytest
import torch

from colorlab.config import compose
from colorlab.data import ColorDataModule
from colorlab.data.synthetic import SyntheticScenes, draw_scene, paint_scene, paint_scenes, render_batch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def painted_both_ways(size: int, n: int, device: str, split: str = "train"):
    """(numpy-painted rgb (n, 3, H, W), bimodal (n, 1, H, W)), (the same from the batched torch painter)."""
    cpu = SyntheticScenes(size, n, seed=3, split=split)
    drawn = SyntheticScenes(size, n, seed=3, split=split, render="device")
    reference = [cpu[i] for i in range(n)]
    items = [drawn[i] for i in range(n)]
    batch = {k: torch.stack([item[k] for item in items]).to(device) for k in ("scene", "ground_l")}
    painted = render_batch(batch)
    assert "scene" not in painted and painted["rgb"].device.type == device
    return ((torch.stack([r["rgb"] for r in reference]), torch.stack([r["bimodal"] for r in reference])),
            (painted["rgb"].cpu(), painted["bimodal"].cpu()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("size", [32, 64, 200])
def test_device_painter_draws_the_same_scenes(size, device):
    (rgb, bimodal), (rgb_device, bimodal_device) = painted_both_ways(size, 48, device)
    assert rgb_device.dtype == torch.uint8 and rgb_device.shape == rgb.shape == (48, 3, size, size)
    assert torch.equal(bimodal_device, bimodal)
    difference = (rgb_device.int() - rgb.int()).abs()
    assert difference.max() <= 1  # kornia fp32 against scikit-image float64, then rounding
    assert difference.float().mean() < 0.01


def test_painting_is_the_whole_scene_not_a_resemblance():
    """The comparison above can fail: one draw changed (the horizon of scene 0) moves the sky's pixels."""
    params, ground_l = draw_scene(np.random.default_rng([3, 0, 0]), 64, 0.7)
    rgb, _ = paint_scene(params, ground_l, 64)
    moved = params.copy()
    moved[0] += 6.0
    rgb_moved, _ = paint_scenes(torch.from_numpy(moved)[None].float(), torch.from_numpy(ground_l)[None].float())
    assert (rgb_moved[0].permute(1, 2, 0).int() - torch.from_numpy(rgb).int()).abs().max() > 10


def test_bad_render_is_named():
    with pytest.raises(ValueError, match="data.render must be one of cpu, device, auto. Got 'gpu'"):
        SyntheticScenes(32, 4, seed=0, split="train", render="gpu")


def test_render_auto_paints_on_the_cpu_when_training_there(tiny_overrides):
    """auto: the train split's workers paint while the trainer is on the CPU (the README job unchanged)."""
    import pytorch_lightning as pl

    cfg = compose("regression_l2", tiny_overrides)
    assert cfg.data.render == "auto"
    datamodule = ColorDataModule(seed=0, **{**cfg.data, "num_workers": 0})
    datamodule.setup("fit")
    datamodule.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    batch = next(iter(datamodule.train_dataloader()))
    assert "rgb" in batch and "scene" not in batch


def test_training_on_device_painted_scenes_matches_the_metrics_of_cpu_painted(tiny_overrides, tmp_path):
    """data.render=device (here painted on the CPU device): the same run to within the one-level rounding."""
    from colorlab.fit import train

    metrics = {}
    for render in ("cpu", "device"):
        overrides = [o for o in tiny_overrides if not o.startswith("run_dir=")]
        metrics[render] = train(compose("regression_l2", [*overrides, f"run_dir={tmp_path / render}",
                                                          f"data.render={render}", "trainer.max_steps=4",
                                                          "trainer.deterministic=true"]))
    assert metrics["device"]["val/ab_error"] == pytest.approx(metrics["cpu"]["val/ab_error"], rel=0.02)
