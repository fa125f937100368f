"""The ab prior of a dataset: ``python -m colorlab.prior [experiment=NAME] [data=...] [key=value ...]``.

Streams the training split through the DataModule's own conversion (on the GPU when there is
one), counts pixels per in-gamut ab bin, and caches the counts under ``prior.cache_dir`` keyed by
the dataset and bin settings; training with 2D bins reuses the cache (``fit`` computes it when
missing). The command also draws seed 002's four-panel figure (bin colours, log frequency, log
inverse frequency, log rebalancing weights) and seed 000's K-means analysis of per-image bin
histograms.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import Tensor

from colorlab.bins import rebalance_weights, smooth_prior
from colorlab.cli import error
from colorlab.data.prior import load_or_compute_prior
from colorlab.palette import kmeans


# --- figures -----------------------------------------------------------------------------------
def _grid_image(centers: Tensor, values: Tensor, grid: float) -> tuple:
    """Scatter per-bin values onto the ab grid: (image (n, n) with NaN off-gamut, extent)."""
    n = int(round(2 * 110 / grid)) + 1
    image = torch.full((n, n), float("nan"))
    ia = ((centers[:, 0] + 110) / grid).round().long()
    ib = ((centers[:, 1] + 110) / grid).round().long()
    image[ib, ia] = values.float()
    half = grid / 2
    return image.numpy(), (-110 - half, 110 + half, -110 - half, 110 + half)


def bin_colors(centers: Tensor, lightness: float = 50.0) -> Tensor:
    """sRGB colour (Q, 3) in [0, 1] of each bin centre at a given lightness."""
    from colorlab.color import lab_to_rgb

    lab = torch.cat([torch.full((len(centers), 1), lightness), centers.float()], dim=1)
    return lab_to_rgb(lab.T[None, :, :, None])[0, :, :, 0].T


def draw_prior_figure(centers: Tensor, counts: Tensor, sigma: float, lam: float, grid: float,
                      path: Path, highlight: Tensor | None = None) -> Path:
    """Seed 002's four panels: bin colours, log10 p, log10 1/p, log10 rebalancing weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prior = smooth_prior(counts, centers, sigma)
    weights = rebalance_weights(prior, lam)
    colors = bin_colors(centers)
    n = int(round(2 * 110 / grid)) + 1
    color_image = torch.ones(n, n, 3)
    ia = ((centers[:, 0] + 110) / grid).round().long()
    ib = ((centers[:, 1] + 110) / grid).round().long()
    color_image[ib, ia] = colors
    seen = prior > 0  # bins the data never reaches are left blank in the frequency panels
    panels = [
        ("ab bins (colour at L=50)", None),
        ("log10 frequency p", torch.where(seen, torch.log10(prior), torch.nan)),
        ("log10 inverse frequency 1/p", torch.where(seen, -torch.log10(prior), torch.nan)),
        (f"log10 rebalancing weight (λ={lam})", torch.where(seen, torch.log10(weights), torch.nan)),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4))
    for ax, (title, values) in zip(axes, panels, strict=True):
        extent = (-110 - grid / 2, 110 + grid / 2, -110 - grid / 2, 110 + grid / 2)
        if values is None:
            ax.imshow(color_image.numpy(), origin="lower", extent=extent)
            if highlight is not None:
                ax.scatter(highlight[:, 0], highlight[:, 1], s=30, facecolors="none", edgecolors="black",
                           linewidths=1.2, label=f"{len(highlight)} kept bins")
                ax.legend(loc="lower left", fontsize=8)
        else:
            image, extent = _grid_image(centers, values, grid)
            im = ax.imshow(image, origin="lower", extent=extent, cmap="viridis")
            fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set(title=title, xlabel="a", ylabel="b")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_cluster_figure(histograms: Tensor, centers: Tensor, k: int, path: Path, seed: int = 0,
                        top: int = 12) -> Path:
    """Seed 000's analysis: K-means over per-image bin histograms; one row of colour swatches per
    cluster, each swatch as wide as the bin's share of the cluster's mean histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    normalised = histograms / histograms.sum(dim=1, keepdim=True).clamp_min(1)
    centroids, labels = kmeans(normalised, k, seed=seed)
    colors = bin_colors(centers, lightness=60.0).numpy()
    fig, axes = plt.subplots(k, 1, figsize=(9, 0.8 * k + 0.6), squeeze=False)
    for cluster, ax in enumerate(axes[:, 0]):
        mean = centroids[cluster]
        order = mean.argsort(descending=True)[:top]
        left = 0.0
        for q in order.tolist():
            ax.barh(0, mean[q].item(), left=left, color=colors[q], edgecolor="white", linewidth=0.5)
            left += mean[q].item()
        ax.set_xlim(0, 1)
        ax.set_yticks([])
        ax.set_ylabel(f"{int((labels == cluster).sum())} img", rotation=0, ha="right", va="center", fontsize=8)
        if cluster < k - 1:
            ax.set_xticks([])
    axes[0, 0].set_title(f"K-means (K={k}) over per-image ab histograms: top {top} bins of each cluster mean")
    axes[-1, 0].set_xlabel("share of the cluster's pixels")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from colorlab.config import ConfigError, compose, parse_cli

    argv = sys.argv[1:] if argv is None else argv
    try:
        experiment, overrides, flags = parse_cli(argv)
        if flags & {"--help", "-h"}:
            print(__doc__)
            return 0
        cfg = compose(experiment, overrides)
    except ConfigError as e:
        return error("prior", e)
    prior = load_or_compute_prior(cfg)
    stem = prior["path"].with_suffix("")
    centers, counts = prior["centers"], prior["counts"]
    highlight = None
    if cfg.model.get("bins") == "frequent":
        from colorlab.bins import frequent_centers

        highlight = frequent_centers(centers, smooth_prior(counts, centers, cfg.prior.sigma), cfg.model.n_bins)
    lam = cfg.model.get("lam", 0.5)
    figure = draw_prior_figure(centers, counts, cfg.prior.sigma, lam, cfg.prior.grid,
                               Path(f"{stem}-prior.png"), highlight)
    histograms = prior["histograms"]  # the K-means analysis reuses the cached pass over the data
    clusters = draw_cluster_figure(histograms, centers, min(cfg.prior.clusters, len(histograms)),
                                   Path(f"{stem}-clusters.png"), seed=cfg.seed)
    used = int((counts > 0).sum())
    print(f"prior of {prior['images']} images: {used} of {len(centers)} bins hit\n"
          f"  cache:    {prior['path']}\n  figure:   {figure}\n  clusters: {clusters}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
