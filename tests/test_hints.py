import json
import math

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from colorlab.color import AB_NORM
from colorlab.hints import (
    Hint,
    HintSampling,
    HintsError,
    color_to_ab,
    draw_layout,
    encode_hints,
    load_hints,
    paint_patches,
    parse_hints,
    sample_hints,
)


def test_number_of_hints_is_geometric_with_p():
    p = 1 / 8
    # truncated at 96: P(n > 96) = (7/8)^97 ~ 2e-6, so the statistics are the untruncated law's
    layout = draw_layout(200_000, 64, 64, HintSampling(p=p, max_hints=96), "cpu", torch.Generator().manual_seed(0))
    n = layout.n
    assert n.float().mean().item() == pytest.approx((1 - p) / p, rel=0.02)
    for k in range(6):  # P(n = k) = (1 - p)^k p
        assert (n == k).float().mean().item() == pytest.approx((1 - p) ** k * p, abs=0.004)
    assert layout.valid.sum(1).tolist() == n.tolist()


def test_hint_count_truncation_and_full_reveal_rate():
    gen = torch.Generator().manual_seed(1)
    layout = draw_layout(100_000, 32, 32, HintSampling(max_hints=5, full_reveal=0.05), "cpu", gen)
    assert layout.n.max().item() == 5
    assert layout.reveal.float().mean().item() == pytest.approx(0.05, abs=0.004)
    ab = torch.rand(4000, 2, 8, 8) * 2 - 1
    hint_ab, mask = sample_hints(ab, HintSampling(p=1.0, full_reveal=0.3), gen)  # p = 1: no point hints
    revealed = mask.flatten(1).amin(1) == 1
    assert mask.flatten(1).amax(1)[~revealed].max() == 0  # the rest have no hint at all
    assert revealed.float().mean().item() == pytest.approx(0.3, abs=0.03)
    assert torch.equal(hint_ab[revealed], ab[revealed])


def test_patch_sizes_uniform_and_locations_centred():
    sampling = HintSampling(patch_min=1, patch_max=9, max_hints=96)
    layout = draw_layout(20_000, 512, 512, sampling, "cpu", torch.Generator().manual_seed(2))
    sizes = layout.sizes[layout.valid]
    counts = torch.bincount(sizes, minlength=10)[1:].float() / len(sizes)
    assert sizes.min() == 1 and sizes.max() == 9
    assert torch.allclose(counts, torch.full((9,), 1 / 9), atol=0.005)
    # corners: colorization-pytorch's int(np.clip(np.random.normal((L-P+1)/2, (L-P+1)/4), 0, L-P)) per axis
    rng = np.random.default_rng(0)
    reference = np.array([int(np.clip(rng.normal((512 - q + 1) / 2, (512 - q + 1) / 4), 0, 512 - q))
                          for q in sizes.tolist()])
    for corner in (layout.top[layout.valid], layout.left[layout.valid]):
        corner = corner.double().numpy()
        assert corner.mean() == pytest.approx(reference.mean(), abs=1.5)
        assert corner.std() == pytest.approx(reference.std(), rel=0.02)
        assert (corner == 0).mean() == pytest.approx((reference == 0).mean(), abs=0.005)  # the clipped tail
    assert layout.top.min() >= 0 and (layout.top + layout.sizes).max() <= 512


def test_hint_values_are_patch_means_and_mask_is_the_patch():
    gen = torch.Generator().manual_seed(3)
    ab = torch.rand(64, 2, 24, 24) * 2 - 1
    # one hint per image: its patch must hold the ground truth's mean over exactly that patch
    hint_ab, mask = sample_hints(ab, HintSampling(), gen, n_hints=1, patch=5)
    for i in range(64):
        ys, xs = torch.nonzero(mask[i, 0], as_tuple=True)
        top, left = ys.min(), xs.min()
        assert len(ys) == 25 and ys.max() - top == 4 and xs.max() - left == 4
        expected = ab[i, :, top:top + 5, left:left + 5].double().mean(dim=(1, 2))
        assert torch.allclose(hint_ab[i, :, top, left].double(), expected, atol=1e-5)
        assert torch.allclose(hint_ab[i][:, mask[i, 0] == 1], expected[:, None].float().expand(2, 25), atol=1e-5)
        assert hint_ab[i][:, mask[i, 0] == 0].abs().max() == 0


def test_later_patches_paint_over_earlier_ones():
    values = torch.tensor([[[0.1, 0.2], [0.5, 0.6], [0.9, 0.9]]])  # (1, K=3, 2)
    top, left = torch.tensor([[0, 1, 5]]), torch.tensor([[0, 1, 5]])
    sizes, valid = torch.tensor([[3, 3, 2]]), torch.tensor([[True, True, False]])
    hint_ab, mask = paint_patches(values, top, left, sizes, valid, 8, 8)
    assert hint_ab[0, :, 0, 0].tolist() == pytest.approx([0.1, 0.2])
    assert hint_ab[0, :, 2, 2].tolist() == pytest.approx([0.5, 0.6])  # both cover it; the later wins
    assert mask[0, 0].sum() == 9 + 9 - 4 and mask[0, 0, 6, 6] == 0  # the invalid third is not painted


def dense_paint(values, top, left, sizes, valid, h, w):
    """The first paint_patches, a (B, K, H, W) coverage tensor, transcribed as the reference."""
    rows, cols = torch.arange(h), torch.arange(w)
    in_rows = (rows[None, None] >= top[..., None]) & (rows[None, None] < (top + sizes)[..., None])
    in_cols = (cols[None, None] >= left[..., None]) & (cols[None, None] < (left + sizes)[..., None])
    covers = in_rows[..., :, None] & in_cols[..., None, :] & valid[..., None, None]
    order = torch.arange(1, values.shape[1] + 1)[None, :, None, None]
    last = (covers * order).amax(dim=1)
    mask = (last > 0).float()[:, None]
    padded = torch.cat([torch.zeros_like(values[:, :1]), values], dim=1)
    hint_ab = padded.gather(1, last.flatten(1)[..., None].expand(-1, -1, 2))
    return hint_ab.transpose(1, 2).reshape(values.shape[0], 2, h, w) * mask, mask


@pytest.mark.parametrize("max_side", [None, 11, 40])  # exact pixels; squares of the largest side; squares > H, W
@pytest.mark.parametrize("chunk", [1, 7, 1 << 18])
def test_scattered_painting_equals_the_dense_reference(chunk, max_side):
    """Bit for bit, with overlaps, invalid hints, patches over the border and chunks splitting patches."""
    gen = torch.Generator().manual_seed(11)
    b, k, h, w = 5, 40, 23, 31
    values = torch.randn(b, k, 2, generator=gen)
    sizes = torch.randint(0, 12, (b, k), generator=gen)
    top = torch.randint(-4, h, (b, k), generator=gen)
    left = torch.randint(-4, w, (b, k), generator=gen)
    valid = torch.rand(b, k, generator=gen) < 0.8
    hint_ab, mask = paint_patches(values, top, left, sizes, valid, h, w, max_side, chunk=chunk)
    ref_ab, ref_mask = dense_paint(values, top, left, sizes, valid, h, w)
    assert torch.equal(mask, ref_mask) and torch.equal(hint_ab, ref_ab)
    assert 0 < mask.mean() < 1  # the case covers overlaps and gaps
    layout = draw_layout(b, h, w, HintSampling(max_hints=k), "cpu", gen)  # what sample_hints paints
    args = (values[:, :layout.sizes.shape[1]], layout.top, layout.left, layout.sizes, layout.valid, h, w)
    assert all(torch.equal(a, r) for a, r in zip(paint_patches(*args, max_side, chunk=chunk), dense_paint(*args),
                                                  strict=True))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_per_image_gaussian_blur_matches_kornia(dtype):
    from kornia.filters import gaussian_blur2d

    from colorlab.hints import gaussian_blur

    x = torch.rand(5, 2, 19, 23, generator=torch.Generator().manual_seed(4)).to(dtype)
    sigma = torch.tensor([1e-3, 0.3, 0.7, 1.0, 1.9])
    ours = gaussian_blur(x, sigma, radius=4)
    reference = gaussian_blur2d(x.float(), 9, sigma[:, None].expand(5, 2))  # reflect border, sigma per image
    assert ours.dtype == dtype
    assert torch.allclose(ours.float(), reference, atol=1e-6 if dtype == torch.float32 else 1e-2)
    assert torch.equal(ours[0], x[0])  # a vanishing sigma leaves the image as it is


def test_color_to_ab_matches_scikit_image():
    for hex_color, rgb in [("#d02020", (208, 32, 32)), ("#2a7", (34, 170, 119)), ("ffffff", (255, 255, 255))]:
        a, b = color_to_ab(hex_color)
        expected = rgb2lab(np.array(rgb, dtype=np.float64).reshape(1, 1, 3) / 255.0)[0, 0]
        assert (a, b) == pytest.approx((expected[1], expected[2]), abs=0.05)


def test_parse_hints_accepts_both_forms():
    hints = parse_hints([{"x": 120, "y": 64, "color": "#d02020"}, {"x": 0, "y": 99.5, "ab": [40, -20], "size": 12}],
                        width=200, height=100)
    assert hints[0].x == 120 and hints[0].size is None and hints[0].ab == pytest.approx(color_to_ab("#d02020"))
    assert hints[1] == Hint(0.0, 99.5, (40.0, -20.0), 12.0)


@pytest.mark.parametrize("points, message", [
    ({"x": 1, "y": 1, "color": "#fff"}, "JSON list"),
    ([{"x": 200, "y": 10, "color": "#fff"}], "outside the image"),
    ([{"x": -1, "y": 10, "color": "#fff"}], "outside the image"),
    ([{"x": 5, "y": 10, "color": "red"}], "#rrggbb"),
    ([{"x": 5, "y": 10, "color": "#12345g"}], "#rrggbb"),
    ([{"x": 5, "y": 10}], "exactly one of color"),
    ([{"x": 5, "y": 10, "color": "#fff", "ab": [1, 2]}], "exactly one of color"),
    ([{"x": 5, "y": 10, "ab": [300, 0]}], "ab must be"),
    ([{"x": 5, "y": 10, "color": "#fff", "colour": "#fff"}], "unknown keys"),
    ([{"x": "5", "y": 10, "color": "#fff"}], "x must be a finite number"),
    ([{"x": 5, "y": float("nan"), "color": "#fff"}], "hint 0: y must be a finite number"),
    ([{"x": 5, "y": 10, "color": "#fff", "size": 0}], "size must be"),
    ([{"x": 5, "y": 10, "color": "#fff", "size": float("nan")}], r"size must be a number of pixels in \(0, 200"),
    ([{"x": 5, "y": 10, "color": "#fff", "size": float("inf")}], "hint 0: size must be"),
    ([{"x": 5, "y": 10, "color": "#fff", "size": 1e300}], "hint 0: size must be"),
    ([{"x": 5, "y": 10, "ab": [True, False]}], "hint 0: ab must be"),
    ([{"x": 5, "y": 10, "ab": [float("nan"), 0]}], "hint 0: ab must be"),
    ([{"x": 10**400, "y": 10, "ab": [1, 0]}], "hint 0: x must be a finite number"),
    ([{"x": 5, "y": 10, "ab": [1, 0]}] * 1001, "1001 hints; at most 1000"),
])
def test_bad_hints_are_clear_errors(points, message):
    with pytest.raises(HintsError, match=message):
        parse_hints(points, width=200, height=100)


def test_hints_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_hints(tmp_path / "missing.json", 10, 10)
    bad = tmp_path / "bad.json"
    bad.write_text("[{x: 1}]")
    with pytest.raises(HintsError, match="bad.json is not valid JSON"):
        load_hints(bad, 10, 10)
    bad.write_text(json.dumps([{"x": 1, "y": 50, "color": "#fff"}]))
    with pytest.raises(HintsError, match="bad.json: hint 0"):
        load_hints(bad, 10, 10)


def test_encode_hints_maps_input_pixels_to_network_pixels():
    hints = [Hint(x=390, y=10, ab=(55.0, -11.0)), Hint(x=100, y=150, ab=(-22.0, 33.0), size=40)]
    hint_ab, mask = encode_hints(hints, image_size=(200, 400), net_size=(32, 64), default_patch=3)
    # first: centre (1, 62) at the network's scale, 3x3 clipped into the image at the right edge
    assert mask[0, 0, 0:3, 61:64].sum() == 9
    assert hint_ab[0, :, 1, 62].tolist() == pytest.approx([55 / AB_NORM, -11 / AB_NORM])
    # second: 40 input px = 40 * 0.16 = 6.4 -> 6 network px, centred at (24, 16)
    ys, xs = torch.nonzero(mask[0, 0, 12:, :40], as_tuple=True)
    assert len(ys) == 36 and xs.min() == 16 - 2 and ys.min() + 12 == 24 - 2
    assert mask.sum() == 9 + 36
    empty_ab, empty_mask = encode_hints([], (200, 400), (32, 64))
    assert empty_mask.sum() == 0 and empty_ab.shape == (1, 2, 32, 64)


def test_sampling_is_reproducible_with_a_generator():
    ab = torch.rand(8, 2, 16, 16)
    first = sample_hints(ab, HintSampling(), torch.Generator().manual_seed(7))
    again = sample_hints(ab, HintSampling(), torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))


def test_bad_sampling_settings_are_refused():
    for bad in ({"p": 0}, {"patch_min": 0}, {"patch_min": 5, "patch_max": 4}, {"full_reveal": 1.5},
                {"drop": -0.1}, {"carry_chroma_min": 2}, {"carry_wrong": 1.5}, {"carry_self": 1.5}, {"carry_blur": -1}):
        with pytest.raises(ValueError, match="hints"):
            HintSampling(**bad)
    assert math.isclose(HintSampling().p, 0.125)
