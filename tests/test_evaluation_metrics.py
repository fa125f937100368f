"""FID, LPIPS, ΔCF and classification accuracy against independent computations (no downloads)."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from colorlab.color import uint8_to_lab
from colorlab.evaluation.metric_nets import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LPIPS,
    ClassificationAccuracy,
    MetricWeightsError,
    fid_metric,
    inception_extractor,
    metric_factories,
)
from colorlab.metrics import ColorMetrics

pytestmark = pytest.mark.filterwarnings("ignore:evaluate.*_weights=random")


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """The Fréchet distance of two Gaussians fitted to (n, d) features, with scipy's matrix square root."""
    mu_a, mu_b = features_a.mean(0), features_b.mean(0)
    cov_a, cov_b = np.cov(features_a, rowvar=False), np.cov(features_b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


class ColourGrid(nn.Module):
    """A small fixed extractor: uint8 (B, 3, H, W) -> the mean colour of each cell of a 3 x 3 grid (B, 27)."""

    num_features = 27

    def forward(self, rgb_u8):
        return nn.functional.adaptive_avg_pool2d(rgb_u8.float() / 255.0, 3).flatten(1)


def image_sets(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sets of uint8 (n, 3, 24, 24) images from different distributions."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(0, 256, (n, 3, 24, 24), generator=g, dtype=torch.uint8)
    ramps = torch.linspace(0, 1, 24).view(1, 1, 1, 24) * torch.rand(n, 3, 1, 1, generator=g) * 255
    smooth = (ramps + torch.rand(n, 3, 24, 24, generator=g) * 40).clamp(0, 255).to(torch.uint8)
    return noise, smooth


def test_fid_matches_a_scipy_frechet_distance_of_the_extractors_features():
    real, fake = image_sets(120)
    extractor = ColourGrid()
    metric = fid_metric(extractor)
    for start in range(0, 120, 32):  # several updates: the states are sums
        metric.update(real[start:start + 32], real=True)
        metric.update(fake[start:start + 32], real=False)
    expected = frechet_distance(extractor(real).double().numpy(), extractor(fake).double().numpy())
    assert expected > 0.1
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-5)


def test_fid_of_gaussian_features_equals_the_closed_form():
    """Features with exactly known sample means and covariances S1 = R diag(a) R^T, S2 = R diag(b) R^T
    (commuting): FID = |m1 - m2|^2 + sum (sqrt(a) - sqrt(b))^2."""
    d, n = 6, 400
    g = torch.Generator().manual_seed(1)
    rotation = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))[0]
    a = torch.tensor([4.0, 1.0, 0.25, 2.0, 9.0, 0.5], dtype=torch.float64)
    b = torch.tensor([1.0, 1.0, 1.0, 3.0, 4.0, 0.1], dtype=torch.float64)
    m1, m2 = torch.arange(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)

    def exact(mean, variances):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        x = x - x.mean(0)
        whiten = torch.linalg.cholesky(torch.cov(x.T))  # the sample covariance (n - 1) becomes exactly I
        x = torch.linalg.solve_triangular(whiten, x.T, upper=False).T
        return x @ (rotation @ torch.diag(variances.sqrt())).T + mean

    class Identity(nn.Module):
        num_features = d

        def forward(self, x):
            return x

    metric = fid_metric(Identity())
    metric.update(exact(m1, a), real=True)
    metric.update(exact(m2, b), real=False)
    closed_form = float((m1 - m2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum())
    assert float(metric.compute()) == pytest.approx(closed_form, rel=1e-6)


def test_fid_inception_with_random_weights_gives_zero_for_a_set_against_itself():
    """The real extractor class (torch-fidelity's Inception, random weights) at its first pooling layer: the
    2048 pool features cost ~40 s per FID on 2 cores (one 2048 x 2048 eigendecomposition); the end-to-end
    test of evaluate runs those."""
    real, fake = image_sets(6)
    metric = fid_metric(inception_extractor("random", features="64"))
    metric.update(real, real=True)
    metric.update(real, real=False)
    itself = float(metric.compute())
    metric.reset()
    metric.update(real, real=True)
    metric.update(fake, real=False)
    other = float(metric.compute())
    assert other > 1e-3 and abs(itself) < 1e-4 * other


def test_fid_weights_from_a_file_are_loaded_and_a_missing_file_names_the_three_options(tmp_path):
    random = inception_extractor("random", seed=3, features="64")
    torch.save(random.state_dict(), tmp_path / "inception.pth")
    loaded = inception_extractor(str(tmp_path / "inception.pth"), features="64")
    for key, value in random.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    with pytest.raises(MetricWeightsError, match="evaluate.fid_weights=hub .* evaluate.fid_weights=random"):
        inception_extractor(str(tmp_path / "none.pth"))


def test_lpips_is_zero_for_identical_images_and_grows_with_noise():
    """Through evaluate's factory; random AlexNet backbone, torchmetrics' shipped linear layers."""
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(4, 3, 48, 48, generator=g)
    noise = torch.randn(4, 3, 48, 48, generator=g)
    make = metric_factories({"fid": False, "lpips": True, "lpips_weights": "random"})["lpips"]
    values = []
    for sigma in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4):
        metric = make()
        metric.update((rgb + sigma * noise).clamp(0, 1), rgb)
        values.append(float(metric.compute()))
    assert values[0] == 0.0
    assert all(later > earlier for earlier, later in zip(values, values[1:], strict=False)), values


def test_lpips_backbone_weights_come_from_the_given_file(tmp_path):
    import torchvision

    alexnet = torchvision.models.alexnet(weights=None)
    torch.save(alexnet.state_dict(), tmp_path / "alexnet.pth")
    metric = LPIPS(str(tmp_path / "alexnet.pth"))
    assert torch.equal(metric.net.net.slice1[0].weight, alexnet.features[0].weight)
    assert torch.equal(dict(metric.net.net.slice5.named_children())["10"].weight, alexnet.features[10].weight)
    with pytest.raises(MetricWeightsError, match="evaluate.lpips_weights=random"):
        LPIPS(str(tmp_path / "none.pth"))


def lab_of(rgb_u8: torch.Tensor) -> torch.Tensor:
    return uint8_to_lab(rgb_u8)


def constant_image(r: int, g: int, b: int) -> torch.Tensor:
    return torch.tensor([r, g, b], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 16, 16).clone()


def test_delta_cf_against_hand_computed_colourfulness():
    # a constant colour: no spread, M = 0.3 * sqrt(rg^2 + yb^2)
    orange = constant_image(200, 100, 50)  # rg = 100, yb = 150 - 50 = 100
    cf_orange = 0.3 * math.sqrt(100**2 + 100**2)
    # half red, half blue: rg in {255, 0}, yb in {127.5, -255}
    halves = torch.cat([constant_image(255, 0, 0)[..., :8], constant_image(0, 0, 255)[..., 8:]], dim=-1)
    cf_halves = math.sqrt(127.5**2 + 191.25**2) + 0.3 * math.sqrt(127.5**2 + 63.75**2)
    gray = constant_image(128, 128, 128)  # CF 0
    for pred, truth, expected in (([orange, halves], [gray, gray], (cf_orange + cf_halves) / 2),
                                  ([gray, orange], [halves, halves], cf_halves - cf_orange / 2),
                                  # the same colours on other images: ΔCF compares the sets' means, so 0
                                  ([orange, gray], [gray, orange], 0.0)):
        metrics = ColorMetrics()
        for p, t in zip(pred, truth, strict=True):
            metrics.update(lab_of(p), lab_of(t))
        result = metrics.compute()
        assert float(result["val/delta_cf"]) == pytest.approx(expected, abs=0.05)


class ColourClassifier(nn.Module):
    """Class = the dominant channel of the image's mean colour (0 red, 1 green, 2 blue); ties go to class 0,
    so every gray image is 'red'. Takes ImageNet-normalised input, as the VGG-16 does."""

    def forward(self, x):
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
        rgb = x * std + mean
        return (rgb.mean(dim=(2, 3)) * 255).round()  # rounded: a gray image's three channels tie exactly


def coloured_set(n_per_class: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (3n, 3, 16, 16) images whose dominant channel is their label, with texture."""
    g = torch.Generator().manual_seed(0)
    images, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            rgb = torch.rand(3, 16, 16, generator=g) * 80 + 40
            rgb[label] += 100
            images.append(rgb.round().to(torch.uint8))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def test_classification_accuracy_is_right_on_real_chance_on_gray_between_on_colourised():
    from colorlab.color import lab_to_rgb

    rgb_u8, labels = coloured_set()
    lab = uint8_to_lab(rgb_u8)
    gray = torch.cat([lab[:, :1], torch.zeros_like(lab[:, 1:])], dim=1)
    # a colouriser that gets red and green things right and paints blue things green
    colourised = lab.clone()
    blue = labels == 2
    colourised[blue, 1:] = lab[labels == 1][: int(blue.sum()), 1:]
    metric = ClassificationAccuracy(ColourClassifier())
    for version, image in (("real", lab), ("gray", gray), ("colorized", colourised)):
        metric.update(version, lab_to_rgb(image), labels)
    accuracy = {k: float(v) for k, v in metric.compute().items()}
    assert accuracy["classify_real"] == 1.0
    assert accuracy["classify_gray"] == pytest.approx(1 / 3)  # chance over three balanced classes
    assert accuracy["classify_colorized"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="version must be one of"):
        metric.update("sepia", lab_to_rgb(lab), labels)


def test_labelled_folders_give_class_folder_indices_and_refuse_loose_images(tmp_path):
    from PIL import Image

    from colorlab.data.photos import folder_splits

    for name in ("n02", "n01"):
        (tmp_path / "train" / name).mkdir(parents=True)
        (tmp_path / "val" / name).mkdir(parents=True)
        for root in ("train", "val"):
            Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / root / name / "a.png")
    train, val = folder_splits(str(tmp_path / "train"), size=32, seed=0, val_root=str(tmp_path / "val"),
                               labels=True)
    assert {(p.parent.name, val[i]["label"]) for i, p in enumerate(val.paths)} == {("n01", 0), ("n02", 1)}
    assert "label" not in folder_splits(str(tmp_path / "train"), size=32, seed=0,
                                        val_root=str(tmp_path / "val"))[1][0]
    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "val" / "loose.png")
    with pytest.raises(ValueError, match="needs root/<class>/<image>"):
        folder_splits(str(tmp_path / "train"), size=32, seed=0, val_root=str(tmp_path / "val"), labels=True)
