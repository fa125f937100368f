"""DDColor's Table 1 layout (Kang et al., ICCV 2023, arXiv 2212.11613): FID, CF, ΔCF, PSNR, with the
published ImageNet-val-5k rows beside a colorlab checkpoint's row.

The published rows are the paper's Table 1, ImageNet (val5k) columns: the first 5,000 validation images,
256 x 256, every method run by DDColor's authors with its official code and weights. ΔCF is
|CF(colourised) - CF(ground truth)| of the two sets' mean colourfulness: every row's CF and ΔCF give the
same ground-truth CF, 38.21.
"""

from __future__ import annotations

PAPER = "Kang et al. 2023, DDColor, arXiv 2212.11613, Table 1, ImageNet (val5k)"
COLUMNS = ("fid", "colorfulness", "delta_cf", "psnr")
HEADERS = ("FID ↓", "CF ↑", "ΔCF ↓", "PSNR ↑")
PUBLISHED_N, PUBLISHED_SIZE = 5000, 256

# method: (FID, CF, ΔCF, PSNR), as printed in PAPER
PUBLISHED = {
    "CIC (Zhang et al. 2016)": (8.72, 31.60, 6.61, 22.64),
    "InstColor": (8.06, 24.87, 13.34, 23.28),
    "DeOldify": (6.59, 21.29, 16.92, 24.11),
    "Wu et al. 2021": (5.95, 32.98, 5.23, 21.68),
    "ColTran": (6.44, 34.50, 3.71, 20.95),
    "CT2": (5.51, 38.48, 0.27, 23.50),
    "BigColor": (5.36, 39.74, 1.53, 21.24),
    "ColorFormer": (4.91, 38.00, 0.21, 23.10),
    "DDColor-tiny": (4.38, 37.66, 0.55, 23.54),
    "DDColor-large": (3.92, 38.26, 0.05, 23.85),
}


def ddcolor_table(name: str, row: dict, n_images: int, size: int, data: str, random_weights: bool) -> dict:
    """The checkpoint's row (``row``: evaluate's metrics of one decoding) in DDColor's layout, the published
    rows and the reasons the two are not comparable. Returns {'columns', 'rows', 'notes'}; a metric the
    run did not compute (FID skipped) is None."""
    rows = [{"method": name, **{c: row.get(c) for c in COLUMNS}, "source": "this run"}]
    rows += [{"method": method, **dict(zip(COLUMNS, values, strict=True)), "source": PAPER}
             for method, values in PUBLISHED.items()]
    notes = []
    if n_images != PUBLISHED_N:
        notes.append(f"n: {n_images} images here, {PUBLISHED_N} in the paper; FID is biased upward at small n, "
                     "so FIDs at different n are not comparable")
    if size != PUBLISHED_SIZE:
        notes.append(f"resolution: {size} x {size} px here, {PUBLISHED_SIZE} x {PUBLISHED_SIZE} in the paper")
    notes.append(f"test set: {data} here, ImageNet's first 5,000 validation images in the paper")
    if random_weights:
        notes.append("FID ran on random Inception weights: this row shows the layout, not a result")
    if row.get("fid") is None:
        notes.append("FID was skipped (no Inception weights): see evaluate.fid_weights")
    return {"columns": list(COLUMNS), "rows": rows, "notes": notes}


def markdown(table: dict) -> list[str]:
    """The table as markdown lines, notes below it."""
    lines = ["| method | " + " | ".join(HEADERS) + " | source |", "|---" * (len(HEADERS) + 2) + "|"]
    for row in table["rows"]:
        cells = ["—" if row[c] is None else f"{row[c]:.2f}" for c in COLUMNS]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + f" | {row['source']} |")
    return lines + [""] + [f"Not comparable: {note}." for note in table["notes"]]
