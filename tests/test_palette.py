import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from colorlab.bins import gamut_centers
from colorlab.inference import enhance
from colorlab.palette import image_palette, palette_at_point, swatch


def lab_of(rgb):
    return rgb2lab(np.array(rgb, dtype=np.float64).reshape(1, 1, 3) / 255.0)[0, 0]


def test_image_palette_recovers_the_dominant_colours_and_their_shares():
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[:, :35] = (200, 40, 40)  # 70% red
    rgb[:, 35:] = (30, 90, 200)  # 30% blue
    lab = torch.from_numpy(rgb2lab(rgb / 255.0)).permute(2, 0, 1).float()
    palette = image_palette(lab, k=2)
    assert [c["share"] for c in palette] == pytest.approx([0.7, 0.3])
    assert palette[0]["rgb"] == pytest.approx([200, 40, 40], abs=1)
    assert palette[1]["rgb"] == pytest.approx([30, 90, 200], abs=1)
    assert palette[0]["lab"] == pytest.approx(lab_of((200, 40, 40)).tolist(), abs=0.05)


def test_palette_at_point_samples_the_predicted_distribution():
    centers = gamut_centers()
    probs = torch.zeros(len(centers))
    first = int(torch.argmin((centers - torch.tensor([-40.0, 40.0])).norm(dim=1)))
    second = int(torch.argmin((centers - torch.tensor([40.0, -30.0])).norm(dim=1)))
    probs[first], probs[second] = 0.75, 0.25
    palette = palette_at_point(probs, centers, lightness=60.0, k=2, n_samples=4000)
    assert [c["share"] for c in palette] == pytest.approx([0.75, 0.25], abs=0.03)
    # samples are jittered uniformly within each 10-unit bin, so each cluster's mean is its centre
    for colour, index in zip(palette, (first, second), strict=True):
        assert colour["lab"][0] == 60.0
        assert colour["lab"][1:] == pytest.approx(centers[index].tolist(), abs=0.5)


def test_swatch_shows_each_colour():
    palette = [{"hex": "#ff0000", "rgb": [255, 0, 0], "share": 0.6},
               {"hex": "#00ff00", "rgb": [0, 255, 0], "share": 0.4}]
    image = swatch(palette, tile=40)
    assert image.shape == (68, 80, 3)
    assert image[10, 10].tolist() == [255, 0, 0] and image[10, 50].tolist() == [0, 255, 0]


def test_enhance_gamma_and_saturation():
    lab = torch.tensor([50.0, 30.0, -20.0]).view(1, 3, 1, 1)
    plain = enhance(lab)
    brighter = enhance(lab, gamma=2.0)
    expected = np.round(255 * (plain / 255.0) ** 0.5)
    assert np.array_equal(brighter, expected.astype(np.uint8))
    gray = enhance(lab, saturation=0.0)[0, 0]
    assert gray.max() - gray.min() <= 1  # no chroma left
    boosted = rgb2lab(enhance(lab, saturation=1.5) / 255.0)[0, 0]
    assert np.hypot(*boosted[1:]) == pytest.approx(1.5 * np.hypot(30, -20), rel=0.03)
    with pytest.raises(ValueError, match="gamma"):
        enhance(lab, gamma=0)
