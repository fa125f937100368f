"""ab bins: in-gamut centres, soft encoding, priors, rebalancing weights, annealed-mean decoding.

Plain tensors in, plain tensors out, on any device, vectorised (no Python loop over pixels).
ab values are in Lab units unless a name says ``_norm``.

Soft encoding (Zhang et al. 2016) gives each pixel's k nearest bin centres Gaussian weights.
A brute-force k-NN compares every pixel with every centre (Q = 313). Because ab lives in a
bounded plane, we instead precompute, for every 1x1 ab cell, the few centres that can be among
the k nearest of *any* point in that cell; a pixel then looks at ~10 candidates instead of Q.
This is exact, not an approximation (see ``_candidate_table``).
"""

from __future__ import annotations

import functools
import weakref

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from colorlab.color import rgb_to_lab

AB_LIMIT = 110.0  # the ab grid spans [-AB_LIMIT, AB_LIMIT]^2 (richzhang)
ZHANG_GRID = 10.0  # the ab grid spacing of Zhang's 313 bins
CELL = 1.0  # side of the lookup cells for the candidate table, Lab units


# --- bin centres -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _srgb_ab_hull() -> np.ndarray:
    """Vertices (V, 2) of the convex hull of all 8-bit sRGB colours projected onto ab, CCW order.

    The hull's extreme points lie on the surface of the RGB cube, so its six faces suffice.
    """
    from scipy.spatial import ConvexHull

    levels = torch.arange(256, dtype=torch.float32) / 255.0
    u, v = torch.meshgrid(levels, levels, indexing="ij")
    faces = []
    for axis in range(3):
        for value in (0.0, 1.0):
            face = [u, v]
            face.insert(axis, torch.full_like(u, value))
            faces.append(torch.stack(face))
    ab = rgb_to_lab(torch.stack(faces))[:, 1:].permute(0, 2, 3, 1).reshape(-1, 2).double().numpy()
    hull = ConvexHull(ab)
    return ab[hull.vertices]  # scipy gives 2-D hull vertices in counter-clockwise order


def _inside_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """points (N, 2), convex CCW polygon (V, 2) -> bool (N,), boundary counted as inside."""
    edges = np.roll(polygon, -1, axis=0) - polygon
    rel = points[:, None, :] - polygon[None]
    cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
    return (cross >= -1e-9).all(axis=1)


@functools.lru_cache(maxsize=4)
def _gamut_centers(grid: float) -> Tensor:
    half = int(round(AB_LIMIT / grid))
    axis = np.arange(-half, half + 1) * grid
    a, b = np.meshgrid(axis, axis, indexing="ij")  # a-major order, as richzhang's pts_in_hull
    centers = np.stack([a.ravel(), b.ravel()], axis=1)
    offsets = np.array([(da, db) for da in (-grid, 0, grid) for db in (-grid, 0, grid)])
    hull = _srgb_ab_hull()
    near = np.stack([_inside_polygon(centers + o, hull) for o in offsets]).any(axis=0)
    return torch.from_numpy(centers[near]).float()


def gamut_centers(grid: float = ZHANG_GRID) -> Tensor:
    """The in-gamut ab bin centres (Q, 2), a-major order; for grid 10 exactly Zhang's 313 bins.

    A grid centre c (step ``grid`` over [-110, 110]^2) is kept when one of the nine points
    c + {-grid, 0, grid}^2 lies in the convex hull of the sRGB gamut projected onto ab.
    """
    if grid <= 0 or AB_LIMIT % grid:
        raise ValueError(f"grid must be a positive divisor of {AB_LIMIT}. Got {grid}")
    return _gamut_centers(float(grid)).clone()


def frequent_centers(centers: Tensor, prior: Tensor, n: int) -> Tensor:
    """The n most frequent centres (n, 2) under ``prior`` (Q,), in their original order."""
    if not 1 <= n <= len(centers):
        raise ValueError(f"n_bins must be in [1, {len(centers)}] for these centres. Got {n}")
    keep = prior.topk(n).indices.sort().values
    return centers[keep]


# --- encoding ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _candidate_table_cached(centers_bytes: bytes, q: int, k: int, device: str) -> Tensor:
    centers = torch.frombuffer(bytearray(centers_bytes), dtype=torch.float32).view(q, 2)
    n_cells = int(2 * AB_LIMIT / CELL)
    cell_centres = (torch.arange(n_cells) + 0.5) * CELL - AB_LIMIT
    grid = torch.stack(torch.meshgrid(cell_centres, cell_centres, indexing="ij"), dim=-1).view(-1, 2)
    dist = torch.cdist(grid.double(), centers.double())  # (cells, Q)
    # Any point x of a cell with centre c has |x - c| <= r (half diagonal). A centre q among x's
    # k nearest satisfies |c - q| <= |x - q| + r <= d_k(x) + r <= d_k(c) + 2r, so every centre
    # within d_k(c) + 2r of c is a candidate, and no other centre can be among the k nearest.
    radius = dist.topk(min(k, q), dim=1, largest=False).values[:, -1:] + 2 * (CELL * 2**0.5 / 2) + 1e-6
    is_candidate = dist <= radius
    width = int(is_candidate.sum(dim=1).max())
    order = torch.where(is_candidate, dist, torch.inf).argsort(dim=1)[:, :width]
    valid = is_candidate.gather(1, order)
    table = torch.where(valid, order, q)  # index q is a sentinel "no centre" (infinitely far)
    return table.view(n_cells, n_cells, width).to(device)


def tensor_stamp(*tensors: Tensor) -> tuple:
    """Which tensors these are and how often each was written in place: ``same_tensors`` tells whether a
    result worked out from them still holds, without reading their values (on a GPU, a host sync)."""
    return tuple((weakref.ref(t), t._version) for t in tensors)


def same_tensors(stamp: tuple | None, *tensors: Tensor) -> bool:
    """Whether ``stamp`` (``tensor_stamp``) is of these very tensors, none written since (the weak reference
    tells a new tensor at a reused id apart)."""
    return stamp is not None and len(stamp) == len(tensors) and all(
        ref() is t and version == t._version for (ref, version), t in zip(stamp, tensors, strict=True))


# (k, device, id of the centres) -> (their stamp, their table): a model passes the same buffers every step
# (a bins loss and a grid decode two different ones), so the table is found without reading the centres
_LAST_TABLE: dict[tuple[int, str, int], tuple[tuple, Tensor]] = {}
_LAST_TABLES_KEPT = 16


def _candidates(centers: Tensor, k: int) -> Tensor:
    key = (k, str(centers.device), id(centers))
    last = _LAST_TABLE.get(key)
    if last is not None and same_tensors(last[0], centers):
        return last[1]
    c = centers.detach().float().cpu().contiguous()
    table = _candidate_table_cached(c.numpy().tobytes(), len(c), k, str(centers.device))
    if len(_LAST_TABLE) >= _LAST_TABLES_KEPT:
        _LAST_TABLE.pop(next(iter(_LAST_TABLE)))  # the oldest
    _LAST_TABLE[key] = (tensor_stamp(centers), table)
    return table


def knn_encode(ab: Tensor, centers: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The k nearest centres of each pixel, exactly: ab (B, 2, H, W) -> (indices (B, k, H, W) long,
    squared distances (B, k, H, W)), nearest first. Values outside [-110, 110] are clamped."""
    if ab.dim() != 4 or ab.shape[1] != 2:
        raise ValueError(f"ab must have shape (B, 2, H, W). Got {tuple(ab.shape)}")
    k = min(k, len(centers))
    table = _candidates(centers, k)  # (cells, cells, C)
    ab = ab.float().clamp(-AB_LIMIT, AB_LIMIT - 1e-3)
    cell = ((ab + AB_LIMIT) / CELL).long().clamp(0, table.shape[0] - 1)  # (B, 2, H, W)
    candidates = table[cell[:, 0], cell[:, 1]]  # (B, H, W, C)
    # a and b of the candidates apart (two gathers of (B, H, W, C) instead of one of (B, H, W, C, 2)); the
    # sentinel is infinitely far, and ab is finite after the clamp, so no NaN can arise
    far = centers.new_full((1,), torch.inf, dtype=torch.float32)
    cand_a = torch.cat([centers[:, 0].float(), far])[candidates]
    cand_b = torch.cat([centers[:, 1].float(), far])[candidates]
    d2 = (cand_a - ab[:, 0, :, :, None]).square_() + (cand_b - ab[:, 1, :, :, None]).square_()
    d2, nearest = d2.topk(k, dim=-1, largest=False)  # (B, H, W, k)
    idx = candidates.gather(-1, nearest)
    return idx.permute(0, 3, 1, 2), d2.permute(0, 3, 1, 2)


def hard_encode(ab: Tensor, centers: Tensor) -> Tensor:
    """Index of the nearest centre: ab (B, 2, H, W) -> long (B, H, W)."""
    return knn_encode(ab, centers, 1)[0][:, 0]


def soft_encode_sparse(ab: Tensor, centers: Tensor, k: int = 5, sigma: float = 5.0) -> tuple[Tensor, Tensor]:
    """Soft targets in sparse form: (indices (B, k, H, W), weights (B, k, H, W) summing to 1 over k)."""
    idx, d2 = knn_encode(ab, centers, k)
    weights = torch.softmax(-d2 / (2 * sigma**2), dim=1)  # Gaussian weights, normalised
    return idx, weights


def soft_encode(ab: Tensor, centers: Tensor, k: int = 5, sigma: float = 5.0) -> Tensor:
    """Zhang et al.'s soft encoding: ab (B, 2, H, W) in Lab units -> (B, Q, H, W) summing to 1 over Q.

    Each pixel's k nearest centres get weights exp(-d^2 / (2 sigma^2)), normalised.
    """
    idx, weights = soft_encode_sparse(ab, centers, k, sigma)
    b, _, h, w = ab.shape
    return weights.new_zeros(b, len(centers), h, w).scatter_(1, idx, weights)


# --- prior and rebalancing ---------------------------------------------------------------------
def bin_counts(ab: Tensor, centers: Tensor) -> Tensor:
    """Pixel counts per image and bin, (B, Q), of ab (B, 2, H, W) (nearest-centre assignment)."""
    b, q = ab.shape[0], len(centers)
    per_image = hard_encode(ab, centers).flatten(1) + torch.arange(b, device=ab.device)[:, None] * q
    return torch.bincount(per_image.flatten(), minlength=b * q).view(b, q).double()


def smooth_prior(counts: Tensor, centers: Tensor, sigma: float = 5.0) -> Tensor:
    """Empirical distribution (Q,) from counts, each bin's mass spread to its neighbours by a
    Gaussian of ``sigma`` Lab units truncated at 3 sigma (mass preserved), as Zhang et al. smooth
    their prior. Bins farther than 3 sigma from every observed colour keep probability 0."""
    p = counts.double() / counts.sum().clamp_min(1)
    if sigma <= 0:
        return p
    distance = torch.cdist(centers.double(), centers.double())
    kernel = torch.exp(-distance.pow(2) / (2 * sigma**2)) * (distance <= 3 * sigma)
    kernel = kernel / kernel.sum(dim=0, keepdim=True)  # column j spreads bin j's mass
    return kernel @ p


REBALANCE_UNIFORMS = ("all", "observed")


def rebalance_weights(prior: Tensor, lam: float, uniform: str = "all") -> Tensor:
    """w ∝ ((1 - λ) p + λ u)^-1, normalised so that sum_q p_q w_q = 1.

    λ = 1: uniform weights (no rebalancing); λ = 0: w ∝ 1/p (full rebalancing; inf where p = 0).
    ``uniform`` says which uniform distribution u is mixed in:
    - ``all``: 1/Q over all Q bins (the paper's Eq. 4);
    - ``observed``: 1/Q' over the Q' bins with non-zero prior, 0 elsewhere (the released Caffe
      code's ``PriorFactor``). There an unobserved bin would get 1/0; it gets the limit of an observed
      bin whose prior goes to 0, Q'/λ before normalisation (the largest weight any bin can have).
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1]. Got {lam}")
    if uniform not in REBALANCE_UNIFORMS:
        raise ValueError(f"rebalance_uniform must be one of {REBALANCE_UNIFORMS}. Got {uniform!r}")
    p = prior.double()
    if uniform == "all":
        w = 1.0 / ((1.0 - lam) * p + lam / len(p))
    else:
        observed = p > 0
        n_observed = int(observed.sum())
        w = torch.where(observed, 1.0 / ((1.0 - lam) * p + lam / n_observed), n_observed / lam if lam else torch.inf)
    expectation = torch.where(p > 0, p * w, 0.0).sum()  # bins with p = 0 add nothing, also where w = inf (λ = 0)
    return (w / expectation).to(prior.dtype)


# --- targets below full resolution -------------------------------------------------------------
TARGET_SAMPLINGS = ("subsample", "average_colors", "average_encodings")


def _block_shape(shape: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """The side (sh, sw) of the blocks that tile ``shape`` (H, W) into ``size`` (h, w) cells."""
    (height, width), (h, w) = shape, size
    if h < 1 or w < 1 or height % h or width % w:
        raise ValueError(f"targets at {h}x{w} need an input whose sides are multiples of them. Got {height}x{width}")
    return height // h, width // w


def block_colors(ab: Tensor, size: tuple[int, int], sampling: str) -> Tensor:
    """One colour per block: ab (B, C, H, W) -> (B, C, h, w) for blocks of (H/h) x (W/w) pixels.

    - ``subsample``: the block's top-left pixel, as Zhang's released code (Caffe's ``data_ab_ss``, a
      1x1 convolution of weight 1 and stride 4; colorization-pytorch's ``real_B[:, :, ::4, ::4]``);
    - ``average_colors``: the block's mean colour (a blend that may lie in a bin no pixel occupies).
    """
    if sampling not in TARGET_SAMPLINGS[:2]:
        raise ValueError(f"block_colors takes {TARGET_SAMPLINGS[:2]}. Got {sampling!r}")
    sh, sw = _block_shape(tuple(ab.shape[-2:]), tuple(size))
    if sh == sw == 1:
        return ab
    if sampling == "subsample":
        return ab[..., ::sh, ::sw]
    return F.adaptive_avg_pool2d(ab, size)


def block_average(idx: Tensor, weights: Tensor, n_classes: int, size: tuple[int, int]) -> Tensor:
    """Per-pixel distributions in sparse form, averaged over blocks (``average_encodings``).

    idx (B, k, H, W) long class indices and weights (B, k, H, W) (each pixel's k weights sum to 1)
    -> dense distributions (B, n_classes, h, w), each the mean of its block's (H/h) x (W/w) pixels.
    """
    b, _, height, width = idx.shape
    sh, sw = _block_shape((height, width), tuple(size))
    h, w = size
    rows = torch.arange(height, device=idx.device) // sh
    cols = torch.arange(width, device=idx.device) // sw
    cell = rows[:, None] * w + cols[None, :]  # (H, W): the block of each pixel
    image = torch.arange(b, device=idx.device)[:, None, None, None]
    flat = (image * n_classes + idx) * (h * w) + cell  # (B, k, H, W) index into (B, n_classes, h, w)
    out = weights.new_zeros(b * n_classes * h * w).index_add_(0, flat.flatten(), weights.flatten())
    return out.view(b, n_classes, h, w) / (sh * sw)


# --- decoding ----------------------------------------------------------------------------------
def annealed_mean_logits(logits: Tensor, centers: Tensor, temperature: float) -> Tensor:
    """Logits (B, Q, H, W) -> ab (B, 2, H, W): E[softmax(logits / T)] over the centres.

    softmax(logits / T) equals softmax(log p / T) of p = softmax(logits). T = 0 gives the mode.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is the mode). Got {temperature}")
    centers = centers.to(logits.device, torch.float32)
    if temperature == 0:
        return centers[logits.argmax(dim=1)].permute(0, 3, 1, 2)
    probs = torch.softmax(logits.float() / temperature, dim=1)
    return torch.einsum("bqhw,qc->bchw", probs, centers)


def annealed_mean(probs: Tensor, centers: Tensor, temperature: float) -> Tensor:
    """Probabilities (B, Q, H, W) -> ab (B, 2, H, W); T = 1 the mean, T -> 0 the mode (T = 0 exact)."""
    return annealed_mean_logits(probs.float().clamp_min(1e-30).log(), centers, temperature)


def entropy(logits: Tensor, dim: int = 1) -> Tensor:
    """Entropy in nats of softmax(logits) along dim."""
    log_p = F.log_softmax(logits.float(), dim=dim)
    return -(log_p.exp() * log_p).sum(dim=dim)


def fold_onto(grid_centers: Tensor, kept: Tensor) -> Tensor:
    """The kept bin (index into ``kept`` (n, 2)) that each grid centre (G, 2) folds onto: its nearest, (G,) long."""
    return hard_encode(grid_centers.float().T[None, :, :, None], kept.float()).flatten()


def expand_to_grid(log_probs: Tensor, kept: Tensor, grid_centers: Tensor, grid_prior: Tensor,
                   expansion: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Log-probabilities over n kept bins (B, n, H, W) -> over the G grid bins (B, G, H, W).

    Each kept bin stands for the cell of grid bins folded onto it (``fold_onto``); its probability is
    shared among them in proportion to the training prior ``grid_prior`` (G,) within the cell (a cell
    without prior mass keeps it on the grid bin nearest the kept centre). Annealing then acts on a
    density over equal-sized bins, as with the full grid: annealing the masses of unequal cells favours
    the colours that sit alone in one small cell over those spread across several (docs/reference.md,
    part 4). ``expansion``: ``grid_expansion``'s result for these bins, when the caller keeps it.
    """
    cell, log_share = expansion if expansion is not None else grid_expansion(kept, grid_centers, grid_prior)
    return log_probs.float()[:, cell.to(log_probs.device)] + log_share.to(log_probs.device)[None, :, None, None]


def grid_expansion(kept: Tensor, grid_centers: Tensor, grid_prior: Tensor) -> tuple[Tensor, Tensor]:
    """What ``expand_to_grid`` needs of the bins alone: the kept bin of each grid bin, (G,) long, and the
    log of each grid bin's share of it, (G,) fp32."""
    cell = fold_onto(grid_centers, kept).to(grid_prior.device)  # (G,)
    p = grid_prior.to(torch.float64)
    cell_mass = torch.zeros(len(kept), dtype=torch.float64, device=p.device).index_add_(0, cell, p)
    own = torch.zeros(len(p), dtype=torch.float64, device=p.device)
    own[fold_onto(kept, grid_centers).to(p.device)] = 1.0  # the grid bin of each kept centre
    share = torch.where(cell_mass[cell] > 0, p / cell_mass[cell].clamp_min(1e-300), own)
    return cell, share.log().float()


# --- 1D bins (a and b classified separately) ----------------------------------------------------
def centers_1d(n_bins: int) -> Tensor:
    """Centres (K,) of K equal bins over [-110, 110], used for both a and b."""
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2. Got {n_bins}")
    width = 2 * AB_LIMIT / n_bins
    return torch.arange(n_bins, dtype=torch.float32) * width - AB_LIMIT + width / 2


def encode_1d(ab: Tensor, n_bins: int) -> Tensor:
    """Bin index per channel: ab (B, 2, H, W) -> long (B, 2, H, W) in [0, K)."""
    width = 2 * AB_LIMIT / n_bins
    return ((ab.float() + AB_LIMIT) / width).floor().long().clamp(0, n_bins - 1)


def annealed_mean_1d(logits: Tensor, centers: Tensor, temperature: float) -> Tensor:
    """Logits (B, 2K, H, W) (a bins then b bins) and the K centres (``centers_1d``, on logits' device: a
    model's buffer, so nothing is copied per call) -> ab (B, 2, H, W), annealed mean per channel."""
    b, _, h, w = logits.shape
    per_channel = logits.view(b, 2, len(centers), h, w).flatten(0, 1)  # (2B, K, H, W)
    return annealed_mean_logits(per_channel, centers[:, None], temperature).view(b, 2, h, w)
