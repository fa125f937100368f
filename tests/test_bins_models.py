import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from colorlab.bins import rebalance_weights, soft_encode
from colorlab.color import AB_NORM
from colorlab.config import compose
from colorlab.fit import train
from colorlab.models import build_model, load_colorizer
from colorlab.prior import kmeans, load_or_compute_prior
from colorlab.prior import main as prior_main


@pytest.fixture
def bins_cfg(tiny_overrides):
    return compose("eccv16_full", tiny_overrides)


def test_bins2d_loss_equals_dense_weighted_cross_entropy(bins_cfg):
    model = build_model(bins_cfg)
    gen = torch.Generator().manual_seed(0)
    batch = {"ab": (torch.rand(2, 2, 32, 32, generator=gen) * 2 - 1) * 0.8}
    out = torch.randn(2, len(model.centers), 8, 8, generator=gen)  # the plain net's stride 4
    ab = F.avg_pool2d(batch["ab"], 4) * AB_NORM
    target = soft_encode(ab, model.centers, k=5, sigma=5.0)  # (B, Q, 8, 8) dense reference
    pixel_weight = model.weights[target.argmax(dim=1)]
    expected = (pixel_weight * -(target * F.log_softmax(out, dim=1)).sum(dim=1)).mean()
    torch.testing.assert_close(model.loss(out, batch), expected)


def test_bins2d_buffers_are_saved_and_restored(bins_cfg, tmp_path):
    model = build_model(bins_cfg)
    names = {name for name, _ in model.named_buffers()}
    assert {"centers", "prior", "weights"} <= names  # buffers: moved with .to(), broadcast by DDP
    assert model.centers.shape == (313, 2)
    torch.testing.assert_close(model.weights, rebalance_weights(model.prior.double(), 0.5).float())
    assert (model.prior * model.weights).sum().item() == pytest.approx(1.0, abs=1e-4)
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": model.state_dict(), "colorlab_config": model.config}, path)
    reloaded = load_colorizer(path)
    for name in ("centers", "prior", "weights"):
        assert torch.equal(getattr(reloaded, name), getattr(model, name))


def test_frequent_bins_come_from_the_data_prior(tiny_overrides):
    cfg = compose("unet_bins", tiny_overrides)
    model = build_model(cfg)
    assert model.centers.shape == (32, 2)
    prior = load_or_compute_prior(cfg)
    assert prior["path"].is_file()
    # each kept bin is among the frequent ones: the prior mass on kept bins dominates
    counts = prior["counts"]
    kept = torch.cdist(model.centers, prior["centers"]).argmin(dim=1)
    assert counts[kept].sum() / counts.sum() > 0.9


def test_prior_is_cached_and_reused(tiny_overrides, monkeypatch):
    cfg = compose("unet_bins", tiny_overrides)
    first = load_or_compute_prior(cfg)
    import colorlab.prior

    monkeypatch.setattr(colorlab.prior, "stream_histograms", lambda *a, **k: pytest.fail("recomputed"))
    again = load_or_compute_prior(cfg)
    assert torch.equal(first["counts"], again["counts"]) and first["path"] == again["path"]


def test_prior_command_writes_figures(tiny_overrides, capsys):
    assert prior_main(["experiment=unet_bins", *tiny_overrides, "prior.clusters=3"]) == 0
    printed = capsys.readouterr().out
    figure = next(line.split()[-1] for line in printed.splitlines() if "figure:" in line)
    clusters = next(line.split()[-1] for line in printed.splitlines() if "clusters:" in line)
    for path, min_width in ((figure, 1500), (clusters, 800)):
        with Image.open(path) as image:
            assert image.width >= min_width and image.getextrema()[0][0] < 128  # drawn, not blank


def test_kmeans_separates_clusters():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(50, 3, generator=gen) * 0.1 + c for c in (0.0, 5.0, -5.0)])
    centroids, labels = kmeans(x, 3)
    assert sorted(centroids.mean(dim=1).round().tolist()) == [-5.0, 0.0, 5.0]
    assert all(len(set(labels[i * 50:(i + 1) * 50].tolist())) == 1 for i in range(3))


def test_bins_validation_logs_entropy_and_mode_chroma(tiny_overrides, tmp_path):
    for experiment in ("bins1d", "unet_bins"):
        metrics = train(compose(experiment, tiny_overrides + [f"run_dir={tmp_path / experiment}",
                                                              "trainer.max_epochs=1"]))
        assert metrics["val/entropy"] > 0
        assert 0 <= metrics["val/chroma_bimodal_mode"] <= 130
        saved = json.loads((tmp_path / experiment / "metrics.json").read_text())
        assert saved["val/chroma_bimodal_mode"] == pytest.approx(metrics["val/chroma_bimodal_mode"])
