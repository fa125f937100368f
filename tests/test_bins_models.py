import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from colorlab.bins import gamut_centers, rebalance_weights, smooth_prior, soft_encode
from colorlab.color import AB_NORM
from colorlab.config import compose
from colorlab.data.prior import load_or_compute_prior
from colorlab.fit import train
from colorlab.models import build_model, load_colorizer
from colorlab.palette import kmeans
from colorlab.prior import main as prior_main


@pytest.fixture
def bins_cfg(tiny_overrides):
    return compose("eccv16_full", tiny_overrides)


def build(cfg):
    """The model of cfg with its data's prior, computed on the data side as fit does."""
    return build_model(cfg, load_or_compute_prior(cfg)["counts"])


def test_bins2d_loss_equals_dense_weighted_cross_entropy(bins_cfg):
    model = build(bins_cfg)
    gen = torch.Generator().manual_seed(0)
    batch = {"ab": (torch.rand(2, 2, 32, 32, generator=gen) * 2 - 1) * 0.8}
    out = torch.randn(2, len(model.centers), 8, 8, generator=gen)  # the plain net's stride 4
    ab = batch["ab"][..., ::4, ::4] * AB_NORM  # the default target_sampling: one pixel per 4x4 block
    target = soft_encode(ab, model.centers, k=5, sigma=5.0)  # (B, Q, 8, 8) dense reference
    pixel_weight = model.weights[target.argmax(dim=1)]
    expected = (pixel_weight * -(target * F.log_softmax(out, dim=1)).sum(dim=1)).mean()
    torch.testing.assert_close(model.loss(out, batch), expected)


def test_bins2d_buffers_are_saved_and_restored(bins_cfg, tmp_path):
    model = build(bins_cfg)
    names = {name for name, _ in model.named_buffers()}
    assert {"centers", "prior", "weights"} <= names  # buffers: moved with .to(), broadcast by DDP
    assert model.centers.shape == (313, 2)
    torch.testing.assert_close(model.weights, rebalance_weights(model.prior.double(), 0.5, "observed").float())
    assert (model.prior * model.weights).sum().item() == pytest.approx(1.0, abs=1e-4)
    path = tmp_path / "m.ckpt"
    torch.save({"state_dict": model.state_dict(), "colorlab_config": model.config}, path)
    reloaded = load_colorizer(path)
    for name in ("centers", "prior", "weights"):
        assert torch.equal(getattr(reloaded, name), getattr(model, name))
    assert torch.equal(reloaded.val_metrics.auc.prior, model.val_metrics.auc.prior)  # auc_rebalanced's weights


def test_frequent_bins_come_from_the_data_prior(tiny_overrides):
    cfg = compose("unet_bins", tiny_overrides)
    model = build(cfg)
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
    import colorlab.data.prior

    monkeypatch.setattr(colorlab.data.prior, "stream_histograms", lambda *a, **k: pytest.fail("recomputed"))
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


def test_a_model_uses_exactly_the_prior_it_is_given(tiny_overrides):
    """The statistics come from the data side; the model builder takes them as given."""
    counts = torch.zeros(313, dtype=torch.float64)
    counts[[10, 11, 150, 151, 152, 290]] = torch.tensor([3.0, 9.0, 500.0, 80.0, 1.0, 40.0], dtype=torch.float64)
    centers = gamut_centers()
    expected = smooth_prior(counts, centers, 5.0)
    gamut = build_model(compose("eccv16_full", tiny_overrides), counts)
    assert torch.equal(gamut.centers, centers)
    torch.testing.assert_close(gamut.prior, expected.float())
    torch.testing.assert_close(gamut.weights, rebalance_weights(expected, 0.5, "observed").float())
    frequent = build_model(compose("unet_bins", tiny_overrides + ["model.n_bins=4"]), counts)
    top4 = expected.argsort(descending=True)[:4].sort().values  # the 4 most likely under the smoothed prior
    assert torch.equal(frequent.centers, centers[top4])
    torch.testing.assert_close(frequent.prior.sum(), torch.tensor(1.0))
    torch.testing.assert_close(frequent.grid_prior, counts.float() / counts.sum())  # one-hot targets: the raw prior
    # every formulation weights auc_rebalanced with the same data prior, regression included
    regression = build_model(compose("regression_l2", tiny_overrides), counts)
    for model in (gamut, frequent, regression):
        torch.testing.assert_close(model.val_metrics.auc.prior, expected)
    with pytest.raises(ValueError, match="one count per in-gamut bin"):
        build_model(compose("regression_l2", tiny_overrides), counts[:100])


def test_models_do_not_reach_into_the_data_side():
    """Building a model and computing its loss imports neither the DataModule nor the prior command."""
    code = (
        "import sys, torch\n"
        "from colorlab.config import compose\n"
        "from colorlab.models import build_model, placeholder_prior\n"
        "for name in ('eccv16_full', 'unet_bins', 'bins1d', 'hints_unet'):\n"
        "    cfg = compose(name, ['data.size=32', 'net.width=8'])\n"
        "    model = build_model(cfg, placeholder_prior(cfg))\n"
        "    ab = torch.zeros(1, 2, 32, 32)\n"
        "    model.loss(model.run_net({'l': torch.zeros(1, 1, 32, 32), 'ab': ab}), {'ab': ab})\n"
        "print(sorted(m for m in sys.modules if m.startswith(('colorlab.data', 'colorlab.prior'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
