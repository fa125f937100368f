import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from colorlab.bins import gamut_centers
from colorlab.color import uint8_to_lab
from colorlab.metrics import METRIC_NAMES, ColorMetrics, ab_error, chroma, colorfulness


def colorfulness_numpy(rgb: np.ndarray) -> float:
    """Direct transcription of Hasler & Suesstrunk (2003), eq. 3, on 0..255 RGB (H, W, 3)."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)


def test_colorfulness_matches_published_formula():
    rgb = torch.randint(0, 256, (3, 3, 16, 16), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    expected = [colorfulness_numpy(im.permute(1, 2, 0).numpy()) for im in rgb]
    np.testing.assert_allclose(colorfulness(rgb / 255.0).numpy(), expected, rtol=1e-4)
    assert colorfulness(torch.full((1, 3, 4, 4), 0.5)).item() == pytest.approx(0.0, abs=1e-4)


def test_ab_error_and_chroma():
    ab = torch.zeros(1, 2, 2, 2)
    offset = ab + torch.tensor([3.0, 4.0]).view(1, 2, 1, 1)
    assert torch.allclose(ab_error(offset, ab), torch.full((1, 2, 2), 5.0))
    assert torch.allclose(chroma(offset), torch.full((1, 2, 2), 5.0))


def test_color_metrics_psnr_matches_scikit_image_per_image_mean():
    gen = torch.Generator().manual_seed(1)
    true = torch.randint(0, 256, (4, 3, 12, 12), generator=gen).to(torch.uint8)
    noisy = (true.float() + torch.randn(true.shape, generator=gen) * 20).clamp(0, 255).round().to(torch.uint8)
    lab_true, lab_pred = uint8_to_lab(true), uint8_to_lab(noisy)
    lab_pred[:, 0] = lab_true[:, 0]  # colorization keeps L
    metrics = ColorMetrics()
    metrics.update(lab_pred[:2], lab_true[:2])
    metrics.update(lab_pred[2:], lab_true[2:])
    out = metrics.compute()

    from colorlab.color import lab_to_uint8
    pred_u8, true_u8 = lab_to_uint8(lab_pred), lab_to_uint8(lab_true)
    expected = np.mean([peak_signal_noise_ratio(t.numpy(), p.numpy(), data_range=255)
                        for t, p in zip(true_u8, pred_u8, strict=True)])
    assert out["val/psnr"].item() == pytest.approx(expected, rel=1e-4)
    expected_error = ab_error(lab_pred[:, 1:], lab_true[:, 1:]).mean()
    assert out["val/ab_error"].item() == pytest.approx(expected_error.item(), rel=1e-5)
    assert out["val/ab_error_gray"].item() == pytest.approx(chroma(lab_true[:, 1:]).mean().item(), rel=1e-5)
    assert "val/chroma_bimodal" not in out  # no bimodal mask was given


def test_color_metrics_bimodal_chroma_is_masked_mean():
    lab = torch.zeros(2, 3, 4, 4)
    lab[:, 0] = 50
    lab[:, 1] = torch.arange(16.0).view(4, 4)
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[0, 0, 0, :2] = True  # a = 0, 1
    mask[1, 0, 3, 3] = True  # a = 15
    metrics = ColorMetrics()
    metrics.update(lab, lab, mask)
    assert metrics.compute()["val/chroma_bimodal"].item() == pytest.approx((0 + 1 + 15) / 3)


def test_color_metrics_compute_exactly_the_named_metrics_when_all_apply():
    rgb = torch.randint(0, 256, (2, 3, 16, 16), generator=torch.Generator().manual_seed(2)).to(torch.uint8)
    lab = uint8_to_lab(rgb)  # 16 px: SSIM; a prior: auc_rebalanced; a mask: chroma_bimodal*
    metrics = ColorMetrics(torch.ones(len(gamut_centers())))
    metrics.update(lab, lab, torch.ones(2, 1, 16, 16, dtype=torch.bool))
    assert sorted(metrics.compute(prefix="")) == sorted(METRIC_NAMES)


def test_auc_is_one_for_the_truth_and_analytic_for_a_constant_offset():
    from colorlab.metrics import ErrorCurveAuC

    ab_true = (torch.rand(2, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 60
    auc = ErrorCurveAuC()
    auc.update(ab_true, ab_true)
    assert auc.compute()["auc"].item() == pytest.approx(1.0)
    auc = ErrorCurveAuC()
    auc.update(ab_true + torch.tensor([18.0, 24.0]).view(1, 2, 1, 1), ab_true)  # |offset| = 30 exactly
    out = auc.compute()
    assert out["auc"].item() == pytest.approx((150 - 30 + 1) / 151)
    assert out["auc_per_bin"].item() == pytest.approx((150 - 30 + 1) / 151)


def test_per_bin_auc_weights_every_colour_bin_equally():
    from colorlab.metrics import ErrorCurveAuC

    ab_true = torch.zeros(1, 2, 10, 10)
    ab_true[0, 0, 0, 0] = 60.0  # one rare red pixel among 99 gray ones
    ab_pred = ab_true.clone()
    ab_pred[0, 0, 0, 0] = -40.0  # the rare pixel is off by exactly 100
    out = ErrorCurveAuC()
    out.update(ab_pred, ab_true)
    out = out.compute()
    rare = (150 - 100 + 1) / 151
    assert out["auc"].item() == pytest.approx((99 * 1.0 + rare) / 100)
    assert out["auc_per_bin"].item() == pytest.approx((1.0 + rare) / 2)


def test_color_metrics_ssim_matches_scikit_image():
    from skimage.metrics import structural_similarity

    from colorlab.color import lab_to_uint8

    gen = torch.Generator().manual_seed(2)
    true = torch.randint(0, 256, (2, 3, 32, 32), generator=gen).to(torch.uint8)
    lab_true = uint8_to_lab(true)
    lab_pred = lab_true.clone()
    lab_pred[:, 1:] += torch.randn(lab_pred[:, 1:].shape, generator=gen) * 8
    metrics = ColorMetrics()
    metrics.update(lab_pred, lab_true)
    pred_u8, true_u8 = lab_to_uint8(lab_pred), lab_to_uint8(lab_true)
    expected = np.mean([structural_similarity(t.permute(1, 2, 0).numpy(), p.permute(1, 2, 0).numpy(), channel_axis=2,
                                              data_range=255, gaussian_weights=True, sigma=1.5,
                                              use_sample_covariance=False)
                        for t, p in zip(true_u8, pred_u8, strict=True)])
    assert metrics.compute()["val/ssim"].item() == pytest.approx(expected, abs=2e-3)
