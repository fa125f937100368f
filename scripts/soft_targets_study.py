"""The soft-targets study: {hard, soft} targets x {313 gamut, 32 frequent} bins x λ in {0, 0.5} (docs/reference.md).

Trains nothing: it reads the eight runs of ``experiment=unet_bins`` (the quick-start budget) named
``study_{hard,soft}_{313,32}_lam{0,0.5}`` under RUNS and decodes each last checkpoint on the embedded
validation scenes at T = 0.38 and at the mode (T = 0), the 32-bin ones also as before the fix
(``model.frequent_decode=kept``). Train them with, for example,

    python -m colorlab.fit experiment=unet_bins model.soft=true model.lam=0 run_dir=RUNS/study_soft_32_lam0
    python -m colorlab.fit experiment=unet_bins model.bins=gamut model.n_bins=313 run_dir=RUNS/study_hard_313_lam0.5

then ``python scripts/soft_targets_study.py RUNS`` prints the table (about a minute per checkpoint on 2 cores).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from colorlab.evaluate import evaluate
from colorlab.models import load_colorizer

COLUMNS = ("chroma_bimodal", "chroma_bimodal_mode", "auc_rebalanced", "colorfulness", "ab_error")


def decode(checkpoint: Path, frequent_decode: str) -> dict:
    """Metrics of the checkpoint decoded at T = 0.38 and T = 0, cached next to it (``decoded-<decoding>.json``)."""
    cache = checkpoint.parent / f"decoded-{frequent_decode}.json"
    if cache.is_file() and cache.stat().st_mtime > checkpoint.stat().st_mtime:
        return json.loads(cache.read_text())
    model = load_colorizer(checkpoint)
    model.frequent_decode = frequent_decode
    cfg = OmegaConf.create(model.config)
    cfg.data.num_workers = 0
    cfg.evaluate.temperatures = [0.0]
    cfg.evaluate.hints = []
    cfg.evaluate.fid = cfg.evaluate.lpips = False
    results = evaluate(model, cfg).metrics
    annealed, mode = results["T=0.38"], results["T=0"]
    row = {**annealed, "chroma_bimodal_mode": mode["chroma_bimodal"]}
    cache.write_text(json.dumps(row))
    return row


def main(runs: Path) -> None:
    print("| targets | bins | λ | decoding | chroma_bimodal (T=0.38) | chroma_bimodal_mode | auc_rebalanced | "
          "colorfulness | ab error |")
    print("|---|---|---|---|---|---|---|---|---|")
    truth = None
    for targets in ("hard", "soft"):
        for bins in ("313", "32"):
            for lam in ("0", "0.5"):
                checkpoint = runs / f"study_{targets}_{bins}_lam{lam}" / "checkpoints" / "last.ckpt"
                if not (checkpoint.parent.parent / "metrics.json").is_file():  # metrics.json: the run has ended
                    print(f"| {targets} | {bins} | {lam} | (not trained: {checkpoint}) | | | | | |")
                    continue
                for frequent_decode in (("grid", "kept") if bins == "32" else ("grid",)):
                    row = decode(checkpoint, frequent_decode)
                    truth = (row["chroma_bimodal_true"], row["colorfulness_true"])
                    label = {"grid": "over the grid" if bins == "32" else "313 bins",
                             "kept": "kept bins (before the fix)"}[frequent_decode]
                    print(f"| {targets} | {bins} | {lam} | {label} | "
                          + " | ".join(f"{row[c]:.4f}" if c == "auc_rebalanced" else f"{row[c]:.1f}" for c in COLUMNS)
                          + " |", flush=True)
    if truth:
        print(f"\nGround truth: chroma on the diamond {truth[0]:.1f}, colourfulness {truth[1]:.1f}.")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
