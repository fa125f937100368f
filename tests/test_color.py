import numpy as np
import pytest
import torch
from skimage.color import lab2rgb, rgb2lab

from colorlab.color import (
    AB_NORM,
    denormalize_lab,
    is_gray,
    lab_to_rgb,
    lab_to_uint8,
    normalize_lab,
    rgb_to_lab,
    uint8_to_lab,
)


def test_rgb_to_lab_matches_scikit_image():
    rgb = torch.rand(2, 3, 16, 24, generator=torch.Generator().manual_seed(0))
    expected = np.stack([rgb2lab(im.permute(1, 2, 0).double().numpy()) for im in rgb])
    got = rgb_to_lab(rgb).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-3)


def test_lab_to_rgb_matches_scikit_image():
    lab = torch.stack([torch.rand(4, 4) * 80 + 10, torch.rand(4, 4) * 40 - 20, torch.rand(4, 4) * 40 - 20])
    expected = lab2rgb(lab.permute(1, 2, 0).double().numpy())
    np.testing.assert_allclose(lab_to_rgb(lab[None])[0].permute(1, 2, 0).numpy(), expected, atol=2e-3)


def test_known_values():
    white = rgb_to_lab(torch.ones(1, 3, 1, 1)).flatten()
    red = rgb_to_lab(torch.tensor([1.0, 0.0, 0.0]).view(1, 3, 1, 1)).flatten()
    torch.testing.assert_close(white, torch.tensor([100.0, 0.0, 0.0]), atol=1e-2, rtol=0)
    torch.testing.assert_close(red, torch.tensor([53.24, 80.09, 67.20]), atol=2e-2, rtol=0)


def test_uint8_round_trip_is_exact():
    rgb = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(lab_to_uint8(uint8_to_lab(rgb)), rgb)


def test_normalisation_round_trip_and_ranges():
    lab = uint8_to_lab(torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8))
    l_norm, ab_norm = normalize_lab(lab)
    assert l_norm.shape == (2, 1, 8, 8) and ab_norm.shape == (2, 2, 8, 8)
    assert l_norm.abs().max() <= 0.5 and ab_norm.abs().max() <= 1.0
    torch.testing.assert_close(denormalize_lab(l_norm, ab_norm), lab)


@pytest.mark.parametrize("value", [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
def test_gradients_finite_at_black_and_saturated(value):
    rgb = torch.tensor(value).view(1, 3, 1, 1).expand(1, 3, 2, 2).clone().requires_grad_(True)
    rgb_to_lab(rgb).sum().backward()
    assert torch.isfinite(rgb.grad).all()


def test_lab_is_fp32_under_autocast():
    rgb = torch.rand(1, 3, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert rgb_to_lab(rgb.bfloat16()).dtype == torch.float32


def test_gray_detection():
    gray = uint8_to_lab(torch.full((1, 3, 8, 8), 120, dtype=torch.uint8))
    colour = uint8_to_lab(torch.tensor([200, 40, 40], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 8, 8))
    ab = torch.cat([gray, colour])[:, 1:]
    assert is_gray(ab).tolist() == [True, False]
    # one colourful region is enough to count as colour
    assert not is_gray(torch.cat([gray[:, 1:], colour[:, 1:, :, :1]], dim=3))
    # near-neutral noise (JPEG chroma noise of a gray photo) is still gray
    assert is_gray(gray[:, 1:] + torch.randn_like(gray[:, 1:]))
    assert AB_NORM == 110.0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(\*, 3, H, W\). Got \(1, 4, 2, 2\)"):
        rgb_to_lab(torch.rand(1, 4, 2, 2))
    with pytest.raises(ValueError, match="ab must have shape"):
        is_gray(torch.rand(1, 3, 2, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_conversions_are_kornias_bit_for_bit(dtype):
    """colorlab.color holds kornia's conversion with its constants made once per device (kornia copies them
    from the host on every call, a wait on a GPU): on the CPU the same numbers to the last bit, so runs
    reproduce; the elementwise matrix product used on other devices agrees to rounding."""
    import kornia.color

    from colorlab import color

    gen = torch.Generator().manual_seed(7)
    rgb = torch.rand(3, 3, 21, 19, generator=gen, dtype=dtype)
    rgb[0, :, 0, :4] = torch.tensor([0.0, 1.0, 0.04045, 0.0031308], dtype=dtype)  # ends and both thresholds
    assert torch.equal(color.rgb_to_lab(rgb), kornia.color.rgb_to_lab(rgb))
    lab = torch.cat([torch.rand(3, 1, 21, 19, generator=gen, dtype=dtype) * 100,
                     (torch.rand(3, 2, 21, 19, generator=gen, dtype=dtype) - 0.5) * 300], dim=1)  # out of gamut too
    assert torch.equal(color.lab_to_rgb(lab), kornia.color.lab_to_rgb(lab, clip=True))
    kernel = color._constant("rgb_to_xyz", rgb)
    assert torch.allclose(color._mix_elementwise(rgb, kernel), kornia.color.rgb_to_xyz(rgb), rtol=0, atol=1e-6)
    assert color._constant("white", rgb) is color._constant("white", rgb)  # made once


def test_constants_first_made_in_inference_mode_serve_autograd():
    """Validation (inference mode) often converts first; training's autograd must still save the constants."""
    from colorlab import color

    color.device_constant.cache_clear()
    with torch.inference_mode():
        color.rgb_to_lab(torch.rand(1, 3, 4, 4))
        color.lab_to_rgb(torch.rand(1, 3, 4, 4) * 50)
    rgb = torch.rand(1, 3, 4, 4, requires_grad=True)
    (color.rgb_to_lab(rgb).sum() + color.lab_to_rgb(rgb * 50).sum()).backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
