"""Each reference behaviour against a direct transcription of Zhang's released code, and each
colorlab option against its own definition.

Transcribed (numpy, written from the released code's logic, no import of it):
- richzhang/colorization ``resources/caffe_traininglayers.py``: ``PriorFactor`` (alpha = 1, gamma = λ),
  ``NNEncode.encode_points_mtx_nd`` (k nearest centres, Gaussian weights, normalised), ``PriorBoostLayer``
  (the weight at the argmax of the encoding);
- ``models/colorization_train_val_v2.prototxt``: ``data_ab_ss``, a 1x1 convolution of stride 4 and weight 1;
- colorization-pytorch ``models/pix2pix_model.py``: ``real_B[:, :, ::4, ::4]``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colorlab.bins import (
    block_average,
    block_colors,
    expand_to_grid,
    gamut_centers,
    hard_encode,
    rebalance_weights,
    smooth_prior,
    soft_encode,
    soft_encode_sparse,
)
from colorlab.color import AB_NORM
from colorlab.config import compose
from colorlab.metrics import ErrorCurveAuC
from colorlab.models import build_model


# --- transcriptions of the released code ----------------------------------------------------------
def prior_factor(prior_probs: np.ndarray, gamma: float, alpha: float = 1.0) -> np.ndarray:
    """PriorFactor.__init__: the uniform part over bins with non-zero prior, re-normalised under the prior."""
    uni_probs = np.zeros_like(prior_probs)
    uni_probs[prior_probs != 0] = 1.0
    uni_probs = uni_probs / np.sum(uni_probs)
    prior_mix = (1 - gamma) * prior_probs + gamma * uni_probs
    with np.errstate(divide="ignore"):
        factor = prior_mix ** -alpha
    return factor / np.sum(prior_probs[prior_probs != 0] * factor[prior_probs != 0])


def nn_encode(pts: np.ndarray, cc: np.ndarray, nn: int, sigma: float) -> np.ndarray:
    """NNEncode.encode_points_mtx_nd on flat points (P, 2) -> (P, K), brute-force neighbours."""
    dists = np.sqrt(((pts[:, None, :] - cc[None]) ** 2).sum(-1))
    inds = np.argsort(dists, axis=1, kind="stable")[:, :nn]
    d = np.take_along_axis(dists, inds, axis=1)
    wts = np.exp(-d**2 / (2 * sigma**2))
    wts = wts / np.sum(wts, axis=1)[:, None]
    enc = np.zeros((len(pts), len(cc)))
    enc[np.arange(len(pts))[:, None], inds] = wts
    return enc


def data_ab_ss(ab: np.ndarray) -> np.ndarray:
    """The prototxt's data_ab_ss: convolution, kernel 1, stride 4, weight 1, no bias, per channel."""
    n, c, h, w = ab.shape
    out = np.zeros((n, c, (h - 1) // 4 + 1, (w - 1) // 4 + 1))
    for y in range(out.shape[2]):
        for x in range(out.shape[3]):
            out[:, :, y, x] = 1.0 * ab[:, :, 4 * y, 4 * x]
    return out


def random_ab(seed: int, size: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(2, 2, size, size, generator=gen) * 2 - 1) * 0.6  # ab_norm


# --- part 2: the uniform term of the rebalancing weights -----------------------------------------
def test_observed_uniform_is_the_released_prior_factor():
    counts = torch.zeros(313, dtype=torch.float64)
    counts[[3, 40, 41, 42, 150, 151, 200]] = torch.tensor([5.0, 300, 120, 7, 2000, 40, 1], dtype=torch.float64)
    prior = smooth_prior(counts, gamut_centers(), 5.0)
    observed = prior > 0
    assert 7 < int(observed.sum()) < 313  # some bins unobserved: where the two definitions differ
    expected = prior_factor(prior.numpy(), gamma=0.5)
    weights = rebalance_weights(prior, 0.5, "observed")
    np.testing.assert_allclose(weights[observed].numpy(), expected[observed.numpy()], rtol=1e-12)
    # unobserved bins: the limit of an observed bin whose prior goes to 0 (finite, the largest weight)
    n_observed = int(observed.sum())
    scale = expected[observed.numpy()][0] * ((1 - 0.5) * prior[observed][0].item() + 0.5 / n_observed)
    torch.testing.assert_close(weights[~observed], torch.full((313 - n_observed,), scale * n_observed / 0.5,
                                                              dtype=torch.float64))
    assert weights[~observed].min() > weights[observed].max()


def test_all_uniform_is_the_papers_eq4():
    prior = torch.tensor([0.5, 0.3, 0.2, 0.0], dtype=torch.float64)
    w = 1 / (0.5 * prior + 0.5 / 4)  # Eq. 4 over all Q = 4 bins
    torch.testing.assert_close(rebalance_weights(prior, 0.5, "all"), w / (prior * w).sum())
    assert not torch.allclose(rebalance_weights(prior, 0.5, "observed")[:3], rebalance_weights(prior, 0.5, "all")[:3])
    with pytest.raises(ValueError, match="rebalance_uniform must be one of"):
        rebalance_weights(prior, 0.5, "some")


# --- part 1: targets below full resolution -------------------------------------------------------
def test_subsample_takes_the_reference_pixel_of_each_block():
    ab = random_ab(0)
    np.testing.assert_array_equal(block_colors(ab, (8, 8), "subsample").numpy(), data_ab_ss(ab.numpy()))
    assert torch.equal(block_colors(ab, (8, 8), "subsample"), ab[:, :, ::4, ::4])  # colorization-pytorch
    torch.testing.assert_close(block_colors(ab, (8, 8), "average_colors"), F.avg_pool2d(ab, 4))
    with pytest.raises(ValueError, match="multiples"):
        block_colors(ab, (7, 7), "subsample")


def test_average_encodings_is_the_mean_of_the_dense_encodings():
    ab = random_ab(1) * AB_NORM
    centers = gamut_centers()
    dense = soft_encode(ab, centers, k=5, sigma=5.0)  # (B, Q, 32, 32)
    averaged = block_average(*soft_encode_sparse(ab, centers, 5, 5.0), len(centers), (8, 8))
    torch.testing.assert_close(averaged, F.avg_pool2d(dense, 4))
    torch.testing.assert_close(averaged.sum(dim=1), torch.ones(2, 8, 8))


@pytest.fixture
def eccv16_model(tiny_overrides):
    """eccv16_full with the released code's k = 10 and PriorFactor, on a hand-made prior."""
    def build(**model):
        cfg = compose("eccv16_full", tiny_overrides + [f"model.{k}={v}" for k, v in model.items()])
        counts = torch.zeros(313, dtype=torch.float64)
        counts[::3] = torch.arange(1, 106, dtype=torch.float64) ** 2  # a skewed prior, a third of the bins observed
        return build_model(cfg, counts)
    return build


def test_bins2d_subsample_loss_is_the_released_pipeline(eccv16_model):
    model = eccv16_model(target_sampling="subsample", rebalance_uniform="observed", k=10)
    ab = random_ab(2)
    out = torch.randn(2, 313, 8, 8, generator=torch.Generator().manual_seed(3))
    # the reference: subsample, NN-encode (k=10, sigma=5), weight = PriorFactor at the argmax, weighted CE
    ab_ss = data_ab_ss(ab.numpy() * AB_NORM)  # (2, 2, 8, 8)
    points = ab_ss.transpose(0, 2, 3, 1).reshape(-1, 2)
    target = nn_encode(points, model.centers.double().numpy(), nn=10, sigma=5.0)  # (P, Q)
    factor = prior_factor(model.prior.double().numpy(), gamma=0.5)[target.argmax(axis=1)]
    log_p = F.log_softmax(out.double(), dim=1).permute(0, 2, 3, 1).reshape(-1, 313).numpy()
    expected = np.mean(factor * -(target * log_p).sum(axis=1))
    assert model.loss(out, {"ab": ab}).item() == pytest.approx(expected, rel=1e-4)
    # the defaults are the released code's but k (the paper's 5); colorlab's own options give another loss
    assert eccv16_model(k=10).loss(out, {"ab": ab}).item() == pytest.approx(expected, rel=1e-4)
    earlier = eccv16_model(k=10, target_sampling="average_colors", rebalance_uniform="all")
    assert earlier.loss(out, {"ab": ab}).item() != pytest.approx(expected, rel=1e-3)


def test_bins2d_average_encodings_loss_follows_its_definition(eccv16_model):
    model = eccv16_model(target_sampling="average_encodings")
    ab = random_ab(4)
    out = torch.randn(2, 313, 8, 8, generator=torch.Generator().manual_seed(5))
    target = F.avg_pool2d(soft_encode(ab * AB_NORM, model.centers, 5, 5.0), 4)  # (B, Q, 8, 8)
    weight = model.weights[target.argmax(dim=1)]
    expected = (weight * -(target * F.log_softmax(out, dim=1)).sum(dim=1)).mean()
    torch.testing.assert_close(model.loss(out, {"ab": ab}), expected)


def test_bins1d_targets_per_sampling(tiny_overrides):
    ab = random_ab(6)
    out = torch.randn(2, 40, 8, 8, generator=torch.Generator().manual_seed(7))  # the plain net's stride 4
    logits = out.view(2, 2, 20, 8, 8)
    losses = {}
    for sampling in ("subsample", "average_colors", "average_encodings"):
        cfg = compose("bins1d", tiny_overrides + [f"model.target_sampling={sampling}"])
        losses[sampling] = build_model(cfg, torch.ones(313, dtype=torch.float64)).loss(out, {"ab": ab})
    index = ((ab * AB_NORM + 110) / 11).floor().long().clamp(0, 19)  # (2, 2, 32, 32): 20 bins of 11 units
    subsampled = index[:, :, ::4, ::4]  # real_B[:, :, ::4, ::4], then binned
    expected = F.cross_entropy(logits.transpose(1, 2), subsampled)
    torch.testing.assert_close(losses["subsample"], expected)
    one_hot = F.one_hot(index, 20).permute(0, 1, 4, 2, 3).float().flatten(1, 2)  # (2, 40, 32, 32)
    averaged = F.avg_pool2d(one_hot, 4).view(2, 2, 20, 8, 8)
    torch.testing.assert_close(losses["average_encodings"],
                               -(averaged * F.log_softmax(logits, dim=2)).sum(dim=2).mean())
    mean_colors = ((F.avg_pool2d(ab, 4) * AB_NORM + 110) / 11).floor().long().clamp(0, 19)
    torch.testing.assert_close(losses["average_colors"], F.cross_entropy(logits.transpose(1, 2), mean_colors))


def test_hints_bins_head_subsamples_like_colorization_pytorch(tiny_overrides):
    cfg = compose("hints_unet", tiny_overrides + ["model.target_sampling=subsample", "model.loss=mse",
                                                  "data.size=32", "net.width=8"])
    model = build_model(cfg, torch.ones(313, dtype=torch.float64))
    ab = random_ab(8)
    gen = torch.Generator().manual_seed(9)
    out = torch.randn(2, 2 + 32, 32, 32, generator=gen)
    regression = F.mse_loss(torch.tanh(out[:, :2]), ab)
    logits = model.bins_logits(F.avg_pool2d(out[:, 2:], 4))
    nearest = hard_encode(ab[:, :, ::4, ::4] * AB_NORM, model.centers)  # real_B[:, :, ::4, ::4]
    expected = regression + 0.01 * F.cross_entropy(logits, nearest)
    torch.testing.assert_close(model.loss(out, {"ab": ab}), expected)


# --- part 3: rebalanced AuC -------------------------------------------------------------------------
def test_auc_rebalanced_on_a_hand_made_case():
    """Two bins with training prior 0.8 and 0.2; four pixels of the first bin predicted exactly, one
    pixel of the second off by exactly 30 (a curve of (150 - 30 + 1) / 151 = 121/151 = 0.80132).

    raw:         (4 * 1 + 121/151) / 5                          = 0.96026
    rebalanced:  weights 1/(0.8 * 2) = 0.625 and 1/(0.2 * 2) = 2.5 (E_p[w] = 0.8 * 0.625 + 0.2 * 2.5 = 1)
                 (4 * 0.625 * 1 + 2.5 * 121/151) / (4 * 0.625 + 2.5) = (1 + 121/151) / 2 = 0.90066
    per bin:     (1 + 121/151) / 2 as well: every bin equal, whatever the prior
    A third bin with prior 0 and its pixel predicted badly would count nowhere in the rebalanced value.
    """
    centers = gamut_centers()
    first, second, never = 150, 40, 200  # indices of three in-gamut bins
    prior = torch.zeros(313, dtype=torch.float64)
    prior[first], prior[second] = 0.8, 0.2
    truth = centers[[first] * 4 + [second]].T.reshape(1, 2, 1, 5)
    offset = torch.zeros_like(truth)
    offset[..., 4] = torch.tensor([18.0, 24.0]).view(2, 1)  # |(18, 24)| = 30 exactly
    auc = ErrorCurveAuC(prior)
    auc.update(truth + offset, truth)
    out = auc.compute()
    assert out["auc"].item() == pytest.approx((4 + 121 / 151) / 5)
    assert out["auc_rebalanced"].item() == pytest.approx(0.90066, abs=1e-5)
    assert out["auc_per_bin"].item() == pytest.approx((1 + 121 / 151) / 2)
    unseen = centers[[never]].T.reshape(1, 2, 1, 1)
    auc.update(unseen + 100, unseen)  # a colour the training prior never saw: weight 0
    assert auc.compute()["auc_rebalanced"].item() == pytest.approx(0.90066, abs=1e-5)
    # per bin it counts as a third: |(100, 100)| = 141.4, a curve of (150 - 142 + 1) / 151 = 9/151
    assert auc.compute()["auc_per_bin"].item() == pytest.approx((1 + 121 / 151 + 9 / 151) / 3)
    # the rare bin's weight makes the difference from a uniform weighting of pixels
    prior[first], prior[second] = 0.2, 0.8
    flipped = ErrorCurveAuC(prior)
    flipped.update(truth + offset, truth)
    assert flipped.compute()["auc_rebalanced"].item() > out["auc"].item()


def test_auc_without_a_prior_leaves_the_rebalanced_value_out():
    auc = ErrorCurveAuC()
    ab = torch.zeros(1, 2, 4, 4) + 20
    auc.update(ab, ab)
    assert set(auc.compute()) == {"auc", "auc_per_bin"}


# --- part 4: annealing over the n most frequent bins -----------------------------------------------
def test_expand_to_grid_shares_each_kept_bin_by_the_prior_in_its_cell():
    grid = torch.tensor([[0.0, 0.0], [10.0, 0.0], [50.0, 0.0], [60.0, 0.0], [90.0, 0.0]])
    kept = torch.tensor([[0.0, 0.0], [50.0, 0.0], [90.0, 0.0]])  # cells {0, 1}, {2, 3}, {4, 5}
    grid = torch.cat([grid, torch.tensor([[100.0, 0.0]])])  # cell {4, 5} has no mass: all on bin 4, its centre
    prior = torch.tensor([0.4, 0.1, 0.3, 0.2, 0.0, 0.0])
    probs = torch.tensor([0.5, 0.3, 0.2]).view(1, 3, 1, 1)
    expanded = expand_to_grid(probs.log(), kept, grid, prior).exp().flatten()
    by_hand = torch.tensor([0.5 * 0.8, 0.5 * 0.2, 0.3 * 0.6, 0.3 * 0.4, 0.2, 0.0])
    torch.testing.assert_close(expanded, by_hand)


@pytest.mark.parametrize("soft", [True, False])
def test_frequent_bins_anneal_like_the_full_grid(tiny_overrides, soft):
    """The collapse of part 4 on a hand-made prior: a common mode (green, 70%) whose four grid neighbours
    are among the 6 kept bins and a rare one (magenta, 30%) kept alone. For a pixel that is green or
    magenta with those odds, the cross-entropy optimum is the mean of the two targets; its annealed mean
    at T = 0.38 must match what the full 313-bin model gives on the same prior (the reference), not
    collapse towards gray as annealing the kept bins' masses does with soft targets."""
    green, magenta = (-50.0, 40.0), (50.0, -40.0)
    centers = gamut_centers()
    counts = torch.zeros(len(centers), dtype=torch.float64)
    for ab, n in ((green, 70.0), (magenta, 30.0)):
        counts[hard_encode(torch.tensor(ab).view(1, 2, 1, 1), centers).item()] = n

    def optimum_chroma(model, temperature=0.38):
        idx, w = model.encode(torch.tensor([green, magenta]).view(2, 2, 1, 1))
        targets = torch.zeros(2, len(model.centers), 1, 1).scatter_(1, idx, w)
        optimum = (0.7 * targets[:1] + 0.3 * targets[1:]).clamp_min(1e-12).log()
        return float((model.decode_at(optimum, temperature) * AB_NORM).norm())

    overrides = tiny_overrides + ["model.name=bins2d", f"model.soft={soft}", "model.rebalance=false"]
    frequent = build_model(compose("unet_bins", overrides + ["model.n_bins=6"]), counts)
    full_grid = build_model(compose("unet_bins", overrides + ["model.bins=gamut", "model.n_bins=313"]), counts)
    kept = {tuple(c) for c in frequent.centers.tolist()}  # the setting: green with its 4 neighbours, magenta alone
    assert kept == {green, magenta, (-60.0, 40.0), (-40.0, 40.0), (-50.0, 30.0), (-50.0, 50.0)}
    reference = optimum_chroma(full_grid)
    # soft: the cells share by the smoothed prior (a 3-sigma Gaussian, 9 bins), the encoding spreads over k = 5
    assert optimum_chroma(frequent) == pytest.approx(reference, abs=1e-3 if not soft else 2.5)
    frequent.frequent_decode = "kept"
    if soft:  # frequent_decode=kept: the lone rare bin wins the annealing
        assert optimum_chroma(frequent) < reference - 15
    # the mode is the common colour either way
    assert optimum_chroma(frequent, 0.0) == pytest.approx(float(torch.tensor(green).norm()), abs=1e-4)
