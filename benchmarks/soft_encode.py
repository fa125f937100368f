"""soft_encode against the scikit-learn NearestNeighbors implementation of the same formula.

The baseline is Zhang et al.'s NNEncode (colorization/caffe-files): ball-tree k-NN on the
flattened pixels, Gaussian weights, a dense (N, Q) array, transposed back to (B, Q, H, W).
Targets, on 8 x 64 x 64 random ab: outputs equal within 1e-5; the dense soft_encode at most 2x the time of
zero-filling its own (B, Q, H, W) output tensor in the same run (the memory floor: no dense encoder
can beat it); soft_encode_sparse (what training uses) at least 5x faster than the baseline.

    python benchmarks/soft_encode.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from colorlab.bins import gamut_centers, soft_encode, soft_encode_sparse

MAX_DENSE_OVER_FLOOR = 2.0
MIN_SPARSE_SPEEDUP = 5.0


def sklearn_soft_encode(ab: np.ndarray, nbrs, q: int, k: int, sigma: float) -> np.ndarray:
    b, _, h, w = ab.shape
    flat = ab.transpose(0, 2, 3, 1).reshape(-1, 2)
    dists, inds = nbrs.kneighbors(flat)
    weights = np.exp(-(dists**2) / (2 * sigma**2))
    weights /= weights.sum(axis=1, keepdims=True)
    dense = np.zeros((flat.shape[0], q))
    dense[np.arange(flat.shape[0])[:, None], inds] = weights
    return dense.reshape(b, h, w, q).transpose(0, 3, 1, 2)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up (builds the candidate table once)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    from sklearn.neighbors import NearestNeighbors

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    k, sigma = 5, 5.0
    centers = gamut_centers()
    ab = (torch.rand(8, 2, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 110
    nbrs = NearestNeighbors(n_neighbors=k, algorithm="ball_tree").fit(centers.double().numpy())
    ab_np = ab.double().numpy()

    reference = sklearn_soft_encode(ab_np, nbrs, len(centers), k, sigma)
    ours = soft_encode(ab, centers, k, sigma)
    max_diff = float(np.abs(ours.double().numpy() - reference).max())

    t_sklearn = timed(lambda: sklearn_soft_encode(ab_np, nbrs, len(centers), k, sigma), args.repeats)
    t_dense = timed(lambda: soft_encode(ab, centers, k, sigma), args.repeats)
    t_sparse = timed(lambda: soft_encode_sparse(ab, centers, k, sigma), args.repeats)
    t_zeros = timed(lambda: torch.zeros(8, len(centers), 64, 64), args.repeats)
    speedup, over_floor, sparse_speedup = t_sklearn / t_dense, t_dense / t_zeros, t_sklearn / t_sparse
    print(f"input: 8 x 64 x 64 ab, Q = {len(centers)}, k = {k}, sigma = {sigma}, threads = {torch.get_num_threads()}")
    print(f"max |soft_encode - sklearn| = {max_diff:.2e}")
    print(f"sklearn NearestNeighbors (dense):    {t_sklearn * 1e3:8.2f} ms")
    print(f"soft_encode (dense (B, Q, H, W)):    {t_dense * 1e3:8.2f} ms   speedup {speedup:6.1f}x")
    print(f"soft_encode_sparse (used in training): {t_sparse * 1e3:6.2f} ms   speedup {sparse_speedup:6.1f}x")
    print(f"memory floor: torch.zeros of the dense output alone {t_zeros * 1e3:.2f} ms; "
          f"dense soft_encode = {over_floor:.2f}x the floor")
    problems = []
    if max_diff > 1e-5:
        problems.append(f"outputs differ by {max_diff:.2e} > 1e-5")
    if over_floor > MAX_DENSE_OVER_FLOOR:
        problems.append(f"dense {over_floor:.2f}x the zero-fill floor > {MAX_DENSE_OVER_FLOOR:.0f}x")
    if sparse_speedup < MIN_SPARSE_SPEEDUP:
        problems.append(f"sparse speedup {sparse_speedup:.1f}x < {MIN_SPARSE_SPEEDUP:.0f}x")
    print("target: PASS" if not problems else f"target: FAIL ({'; '.join(problems)})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
