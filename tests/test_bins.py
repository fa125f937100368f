import pytest
import torch
import torch.nn.functional as F

from colorlab.bins import (
    annealed_mean,
    annealed_mean_1d,
    centers_1d,
    encode_1d,
    frequent_centers,
    gamut_centers,
    hard_encode,
    rebalance_weights,
    smooth_prior,
    soft_encode,
)
from colorlab.color import rgb_to_lab


def brute_soft_encode(ab, centers, k, sigma):
    """Reference: every pixel against every centre, float64."""
    b, _, h, w = ab.shape
    flat = ab.permute(0, 2, 3, 1).reshape(-1, 2).double()
    d2 = torch.cdist(flat, centers.double()).pow(2)
    nearest_d2, nearest = d2.topk(k, dim=1, largest=False)
    weights = torch.exp(-nearest_d2 / (2 * sigma**2))
    weights = weights / weights.sum(dim=1, keepdim=True)
    dense = torch.zeros_like(d2).scatter_(1, nearest, weights)
    return dense.view(b, h, w, -1).permute(0, 3, 1, 2)


def test_gamut_centers_are_zhangs_313_bins():
    centers = gamut_centers(10.0)
    assert centers.shape == (313, 2)
    assert (centers[:, 0].min(), centers[:, 0].max()) == (-90.0, 100.0)
    assert (centers[:, 1].min(), centers[:, 1].max()) == (-110.0, 100.0)
    assert torch.all(centers % 10 == 0) and len(torch.unique(centers, dim=0)) == 313
    with pytest.raises(ValueError, match="positive divisor of 110"):
        gamut_centers(7.0)


def test_every_srgb_colour_falls_in_a_kept_bin():
    levels = torch.arange(0, 256, 5) / 255.0
    rgb = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).view(1, 3, -1, 1)
    ab = rgb_to_lab(rgb)[:, 1:]
    centers = gamut_centers()
    nearest = centers[hard_encode(ab, centers).flatten()]
    # the nearest kept centre is the colour's own grid cell: no colour falls off the gamut bins
    assert (nearest - ab[0, :, :, 0].T).abs().max() <= 5.0 + 1e-4


@pytest.mark.parametrize("centers", [gamut_centers(), gamut_centers()[::9]], ids=["313", "35-sparse"])
def test_soft_encode_matches_brute_force(centers):
    gen = torch.Generator().manual_seed(0)
    ab = (torch.rand(3, 2, 9, 11, generator=gen) * 2 - 1) * 110  # the whole plane, out of gamut too
    ab[0, :, 0, :4] = torch.tensor([[-0.5, 0.0, 4.999, 105.0], [0.5, 0.0, 5.001, -109.9]])  # near ties
    got = soft_encode(ab, centers, k=5, sigma=5.0)
    torch.testing.assert_close(got.double(), brute_soft_encode(ab, centers, 5, 5.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.sum(dim=1), torch.ones(3, 9, 11))
    assert ((got > 0).sum(dim=1) <= 5).all()


def test_hard_encode_is_the_nearest_centre():
    centers = gamut_centers()
    ab = (torch.rand(2, 2, 8, 8) * 2 - 1) * 100
    expected = torch.cdist(ab.permute(0, 2, 3, 1).reshape(-1, 2), centers).argmin(dim=1).view(2, 8, 8)
    assert torch.equal(hard_encode(ab, centers), expected)


def test_frequent_centers_keep_the_n_most_frequent():
    centers = gamut_centers()
    prior = torch.zeros(313)
    prior[[5, 100, 200]] = torch.tensor([0.2, 0.5, 0.3])
    kept = frequent_centers(centers, prior, 2)
    assert torch.equal(kept, centers[[100, 200]])
    with pytest.raises(ValueError, match=r"n_bins must be in \[1, 313\]"):
        frequent_centers(centers, prior, 400)


def test_smoothing_preserves_mass_and_spreads_to_neighbours():
    centers = gamut_centers()
    counts = torch.zeros(313, dtype=torch.float64)
    counts[150] = 10
    smoothed = smooth_prior(counts, centers, sigma=5.0)
    assert smoothed.sum().item() == pytest.approx(1.0)
    neighbour = torch.cdist(centers[150:151], centers)[0].eq(10).nonzero()[0]
    assert 0 < smoothed[neighbour].item() < smoothed[150].item()
    assert torch.equal(smooth_prior(counts, centers, sigma=0), counts / 10)


def test_rebalancing_weights_limits():
    prior = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    for lam in (0.0, 0.3, 0.5, 1.0):
        assert (prior * rebalance_weights(prior, lam)).sum().item() == pytest.approx(1.0)
    torch.testing.assert_close(rebalance_weights(prior, 1.0), torch.ones(3, dtype=torch.float64))
    full = rebalance_weights(prior, 0.0)  # w ∝ 1/p: every bin gets the same total weight p * w
    torch.testing.assert_close(prior * full, torch.full((3,), 1 / 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\]"):
        rebalance_weights(prior, 1.5)


def test_annealed_mean_mean_and_mode():
    centers = torch.tensor([[0.0, 0.0], [40.0, -20.0], [-60.0, 30.0]])
    probs = torch.tensor([0.2, 0.5, 0.3]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    expectation = (probs[0, :, 0, 0, None] * centers).sum(dim=0)
    torch.testing.assert_close(annealed_mean(probs, centers, 1.0)[0, :, 0, 0], expectation)
    mode = centers[1]
    torch.testing.assert_close(annealed_mean(probs, centers, 0.01)[0, :, 0, 0], mode, atol=1e-3, rtol=0)
    torch.testing.assert_close(annealed_mean(probs, centers, 0.0)[1, :, 3, 3], mode)
    # lower temperature = sharper = more chroma when the mode is the most colourful bin
    chroma = [annealed_mean(probs, centers, t)[0, :, 0, 0].norm() for t in (1.0, 0.38, 0.1)]
    assert chroma[0] < chroma[1] < chroma[2]


def test_1d_bins_encode_and_decode():
    centers = centers_1d(20)
    assert len(centers) == 20 and centers[0] == pytest.approx(-104.5) and centers[-1] == pytest.approx(104.5)
    ab = torch.tensor([-110.0, -104.0, 0.1, 109.9]).view(1, 2, 2, 1)
    assert encode_1d(ab, 20).flatten().tolist() == [0, 0, 10, 19]
    logits = torch.randn(2, 40, 3, 3)
    probs = F.softmax(logits.view(2, 2, 20, 3, 3), dim=2)
    expected = (probs * centers.view(1, 1, 20, 1, 1)).sum(dim=2)
    torch.testing.assert_close(annealed_mean_1d(logits, centers_1d(20), 1.0), expected)


def test_candidate_table_is_not_read_back_each_step(monkeypatch):
    """The same centres tensor, unchanged, finds its table without copying the centres to the host (a device
    sync every step on a GPU); written in place, or another tensor, it is rebuilt, and encodes the new centres."""
    import colorlab.bins as bins

    reads = []
    original = bins._candidate_table_cached
    monkeypatch.setattr(bins, "_candidate_table_cached", lambda *a: reads.append(a) or original(*a))
    centers = gamut_centers(10.0).float()
    ab = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 40
    first = soft_encode(ab, centers, k=5, sigma=5.0)
    assert torch.equal(soft_encode(ab, centers, k=5, sigma=5.0), first) and len(reads) == 1
    centers.mul_(0.5)  # in place: the version counter moves
    moved = soft_encode(ab, centers, k=5, sigma=5.0)
    assert len(reads) == 2
    torch.testing.assert_close(moved.double(), brute_soft_encode(ab, centers, 5, 5.0), atol=1e-5, rtol=0)
    soft_encode(ab, centers.clone(), k=5, sigma=5.0)
    assert len(reads) == 3
