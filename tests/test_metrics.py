import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from colorlab.color import uint8_to_lab
from colorlab.metrics import ColorMetrics, ab_error, chroma, colorfulness


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
