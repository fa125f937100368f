"""Evaluate a checkpoint: ``python -m colorlab.evaluate ckpt=PATH [out=DIR] [data=...] [key=value ...]``.

Any formulation's checkpoint, on its own validation data or another source (``data=folder
data.root=...``). For bin formulations every temperature in ``evaluate.temperatures`` is decoded
from the same forward pass (no retraining): a table, and a plot of colourfulness against AuC over
T (seed 002's mode-to-mean trade-off). For hint models, ``evaluate.hints=[0,1,2,5,10,20,50,100]``
adds Zhang et al. 2017's protocol: PSNR (8-bit RGB) against the number of random ground-truth
hints (``evaluate.hint_patch`` px squares, the same hints for every checkpoint), as a table,
hints.png and hints_samples.png. ``protocol=zhang16|zhang17`` (``evaluate.protocol``) measures a paper's
layout instead, beside its published numbers (colorlab/evaluation/zhang.py).
Video checkpoints (``data=synthetic_video``) also get the temporal
metrics of colorlab/video/clips.py (warp error, CDC, mode flip rate, per-frame PSNR and
colourfulness; propagation for hint models) on ``evaluate.video_clips`` held-out clips, beside the
ground truth's. FID and LPIPS (``evaluate.fid_weights``, ``evaluate.lpips_weights`` = hub, a path or
random; colorlab/evaluation/metric_nets.py) join each decoding's metrics beside CF and ΔCF;
``evaluate.classify=true`` adds a VGG-16's top-1 on real, gray and colourised images of a labelled folder
(Zhang et al. 2016); ``protocol=ddcolor`` (short for ``evaluate.protocol=ddcolor``) adds DDColor's Table 1
layout with the paper's rows (docs/metrics.md). Writes metrics.json, metrics.md, samples.png (and
temperature.png, temperature_samples.png for bins) into ``out`` (default: <run>/evaluate/,
next to the checkpoint's run; training's own files are never touched).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from tqdm import tqdm

from colorlab.cli import error
from colorlab.color import denormalize_lab, lab_to_rgb, lab_to_uint8
from colorlab.config import ConfigError, compute_device, override, split_arguments, usage_exit_code
from colorlab.evaluation.metric_nets import (
    ClassificationAccuracy,
    MetricWeightsError,
    build_classifier,
    metric_factories,
)
from colorlab.hints import sample_hints
from colorlab.metrics import ColorMetrics
from colorlab.models.bins import BinsColorizer, resize_to

USAGE = __doc__.split("\n\n")[0]
PROTOCOLS = (None, "ddcolor", "zhang16", "zhang17")  # evaluate.protocol: a paper's table layout


@dataclass
class Evaluation:
    """What ``evaluate`` measured on the held-out batches, for ``write_report``."""

    metrics: dict[str, dict[str, float]]  # decoding ('default' or 'T=0.38' ...) -> metric -> value
    decodings: dict[str, float | None]  # decoding -> its temperature (None: the formulation's own decode)
    decoding: str  # the checkpoint's own decoding: the one classified and in the papers' layouts
    samples: dict[str, Tensor]  # 'truth', each decoding and 'N hints' -> Lab (n_samples, 3, H, W) of batch 0
    n_images: int
    metric_weights: dict[str, str]  # metric network -> hub | PATH | random
    hints: dict[int, dict[str, float]] | None = None  # hint count -> metrics (evaluate.hints)
    classification: dict[str, float] | None = None  # classify_real / _gray / _colorized top-1
    temporal: list[dict] | None = None  # video checkpoints: rows of the temporal metrics


def decodings_of(model, temperatures) -> dict[str, float | None]:
    """Bins formulations: every temperature asked for, and the model's own; others: their one decoding."""
    if not isinstance(model, BinsColorizer):
        return {"default": None}
    return {f"T={t:g}": t for t in sorted({*temperatures, model.temperature})}


def check_hint_counts(model, cfg: DictConfig) -> list[int]:
    counts = sorted(set(cfg.evaluate.hints))
    if counts and model.hint_sampling is None:
        raise ConfigError("evaluate.hints needs a model trained with hints (experiment=hints_unet); "
                          f"this one is {model.config['experiment']}")
    if any(n < 0 for n in counts) or cfg.evaluate.hint_patch < 1:
        raise ConfigError(f"evaluate.hints must be >= 0 and evaluate.hint_patch >= 1. Got {counts}, "
                          f"{cfg.evaluate.hint_patch}")
    return counts


def hinted_prediction(model, batch: dict, n: int, batch_index: int, cfg: DictConfig) -> Tensor:
    """Lab (B, 3, H, W) with ``n`` random ground-truth hints of ``evaluate.hint_patch`` px: the same hints for
    every checkpoint (a generator seeded by (hint_seed, batch, n))."""
    device = batch["l"].device
    generator = torch.Generator(device).manual_seed((cfg.evaluate.hint_seed * 100_003 + batch_index) * 1009 + n)
    hint_ab, hint_mask = sample_hints(batch["ab"], model.hint_sampling, generator, n_hints=n,
                                      patch=cfg.evaluate.hint_patch)
    out = model(batch["l"], batch.get("embedding"), hint_ab, hint_mask)
    return denormalize_lab(batch["l"], resize_to(model.decode(out).float(), batch["l"].shape[-2:]))


def update_metric_nets(metric_nets: dict, lab_pred: Tensor, lab_true: Tensor) -> None:
    """FID sees both sets as uint8 images; the others (LPIPS) compare each prediction with its truth in RGB."""
    for name, metric in metric_nets.items():
        if name == "fid":
            metric.update(lab_to_uint8(lab_true), real=True)
            metric.update(lab_to_uint8(lab_pred), real=False)
        else:
            metric.update(lab_to_rgb(lab_pred), lab_to_rgb(lab_true))


def update_classification(classify, batch: dict, lab_true: Tensor) -> None:
    if "label" not in batch:
        raise ConfigError("evaluate.classify=true needs labelled images: data=folder data.root=DIR "
                          "data.labels=true (one folder per class, ImageNet's layout)")
    classify.update("real", lab_to_rgb(lab_true), batch["label"])
    lab_gray = torch.cat([lab_true[:, :1], torch.zeros_like(lab_true[:, 1:])], dim=1)
    classify.update("gray", lab_to_rgb(lab_gray), batch["label"])


def computed(metrics: ColorMetrics) -> dict[str, float]:
    return {k.removeprefix("val/"): float(v) for k, v in metrics.compute().items()}


@torch.no_grad()
def evaluate(model, cfg: DictConfig) -> Evaluation:
    """Every decoding of one forward pass per held-out batch (all temperatures for bins), optional metric
    networks, hint counts, classification and, for video checkpoints, the temporal metrics."""
    from colorlab.data import DeviceBatches, validation_data

    datamodule = validation_data(cfg)
    device = next(model.parameters()).device
    decodings = decodings_of(model, cfg.evaluate.temperatures)
    own = "default" if "default" in decodings else f"T={model.temperature:g}"
    hint_counts = check_hint_counts(model, cfg)
    prior = model.val_metrics.auc.prior  # the training data's prior, saved in the checkpoint: auc_rebalanced
    metrics = {name: ColorMetrics(prior).to(device) for name in decodings}
    hinted = {n: ColorMetrics(prior).to(device) for n in hint_counts}
    factories = metric_factories(cfg.evaluate, cfg.seed)
    metric_nets = {name: {k: make().to(device) for k, make in factories.items()} for name in decodings}
    classify = ClassificationAccuracy(build_classifier(cfg.evaluate.classifier_weights, cfg.seed)).to(device) \
        if cfg.evaluate.classify else None
    samples: dict[str, Tensor] = {}
    n_images, n_samples = 0, cfg.evaluate.n_samples
    for i, batch in enumerate(tqdm(DeviceBatches(datamodule, device), desc="evaluate", unit="batch", disable=None)):
        out = model.run_net(batch)  # one forward pass, every temperature decoded from it
        lab_true = denormalize_lab(batch["l"], batch["ab"])
        n_images += len(lab_true)
        if classify is not None:
            update_classification(classify, batch, lab_true)
        for name, t in decodings.items():
            ab = model.decode(out) if t is None else model.decode_at(out, t)
            lab_pred = denormalize_lab(batch["l"], resize_to(ab.float(), batch["l"].shape[-2:]))
            metrics[name].update(lab_pred, lab_true, batch.get("bimodal"))
            update_metric_nets(metric_nets[name], lab_pred, lab_true)
            if classify is not None and name == own:
                classify.update("colorized", lab_to_rgb(lab_pred), batch["label"])
            if i == 0:
                samples[name] = lab_pred[:n_samples].cpu()
        for n, metric in hinted.items():
            lab_hinted = hinted_prediction(model, batch, n, i, cfg)
            metric.update(lab_hinted, lab_true, batch.get("bimodal"))
            if i == 0:
                samples[f"{n} hints"] = lab_hinted[:n_samples].cpu()
        if i == 0:
            samples["truth"] = lab_true[:n_samples].cpu()
    results = {name: {**computed(m), **{k: float(net.compute()) for k, net in metric_nets[name].items()}}
               for name, m in metrics.items()}
    weights = {key: cfg.evaluate[f"{key}_weights"] for key in (*factories, *(["classifier"] if classify else []))}
    return Evaluation(
        results, decodings, own, samples, n_images, weights,
        hints={n: computed(m) for n, m in hinted.items()} or None,
        classification={k: float(v) for k, v in classify.compute().items()} if classify is not None else None,
        temporal=temporal_rows(model, cfg) if cfg.data.name == "synthetic_video" else None)


def temporal_rows(model, cfg: DictConfig) -> list[dict]:
    """Temporal metrics on the first ``evaluate.video_clips`` validation clips, whole. Any
    number: the validation split's clips are generated per index, all of them held out from training,
    not only the ``data.val_size`` that validation uses."""
    from colorlab.data.video_synthetic import SyntheticVideo
    from colorlab.video.clips import model_rows, truth_row

    d = cfg.data
    n = cfg.evaluate.get("video_clips", 128)
    if n < 1:
        raise ValueError(f"evaluate.video_clips must be at least 1. Got {n}")
    clips = SyntheticVideo(d.size, n, cfg.seed, "val", d.frames, d.p_first, d.noise)
    items = [clips[i] for i in tqdm(range(len(clips)), desc="clips", unit="clip", disable=None)]
    return [truth_row(items), *model_rows(model.cpu(), model.config["experiment"], items)]


def plot_hints_curve(hints: dict, patch: int, path: Path) -> Path:
    """PSNR against the number of hints (symlog x), with Zhang 2017's reference points for scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = list(hints)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(counts, [hints[n]["psnr"] for n in counts], "o-", label=f"this checkpoint ({patch}x{patch} px hints)")
    from colorlab.evaluation.zhang import ZHANG2017_PSNR, ZHANG2017_PSNR_100

    published = {**ZHANG2017_PSNR, 100: ZHANG2017_PSNR_100}  # the released model, 1000 ImageNet val images, 6x6
    ax.plot(list(published), list(published.values()), "s--", color="gray", markersize=3,
            label="Zhang 2017 released model (ImageNet, 256 px)")
    ax.set_xscale("symlog", linthresh=1)
    ax.set(xlabel="number of random ground-truth hints", ylabel="PSNR (dB, 8-bit RGB)",
           title="user-guided colourization: PSNR against hints")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(evaluation: Evaluation, model, out: Path, checkpoint: Path, cfg: DictConfig) -> list[Path]:
    """metrics.json, metrics.md, samples.png and, for several temperatures, the trade-off figures."""
    from colorlab.viz import labelled_grid, sample_grid, save_png

    results, samples, decodings = evaluation.metrics, evaluation.samples, evaluation.decodings
    hints, temporal, classification = evaluation.hints, evaluation.temporal, evaluation.classification
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json", out / "metrics.md"]
    gray = ("gray", torch.cat([samples["truth"][:, :1], torch.zeros_like(samples["truth"][:, 1:])], 1))
    evaluated = {"n_images": evaluation.n_images, "decoding": evaluation.decoding,
                 "metric_weights": evaluation.metric_weights}
    report = {"checkpoint": str(checkpoint), "experiment": model.config["experiment"], **evaluated,
              "results": results}
    if classification:
        report["classification"] = classification
    protocol = None
    if cfg.evaluate.protocol == "ddcolor":
        from colorlab.evaluation.ddcolor import ddcolor_table

        data = cfg.data.name if cfg.data.get("root") is None else f"data={cfg.data.name} {cfg.data.root}"
        protocol = ddcolor_table(f"{model.config['experiment']} ({evaluated['decoding']})",
                                 results[evaluated["decoding"]], evaluated["n_images"], cfg.data.size, data,
                                 evaluated["metric_weights"].get("fid") == "random")
        report["ddcolor"] = protocol
    if hints:
        report["hints"] = {"patch": cfg.evaluate.hint_patch, "by_count": {str(n): row for n, row in hints.items()}}
    if temporal:
        report["temporal"] = temporal
    (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    keys = list(next(iter(results.values())))
    lines = [f"# {model.config['experiment']}: {checkpoint}", "", "| decoding | " + " | ".join(keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{row[k]:.4g}" for k in keys) + " |" for name, row in results.items()]
    random = sorted(k for k, w in evaluated["metric_weights"].items() if w == "random")
    lines += ["", f"{evaluated['n_images']} validation images"
              + (" (FID is biased upward at small n: DDColor's ImageNet rows use 5,000)" if "fid" in keys else "")
              + (f"; random weights for {', '.join(random)}: their values show the layout, not a result"
                 if random else "") + "."]
    if classification:
        lines += ["", f"Top-1 of the classifier ({cfg.evaluate.classifier_weights} weights) on the real, gray and "
                  f"{evaluated['decoding']} colourised images: " + ", ".join(
                      f"{k.removeprefix('classify_')} {v:.3f}" for k, v in classification.items())]
    if protocol:
        from colorlab.evaluation.ddcolor import markdown

        lines += ["", "DDColor's Table 1 layout:", "", *markdown(protocol)]
    if hints:
        lines += ["", f"PSNR (8-bit RGB) against the number of random ground-truth hints ({cfg.evaluate.hint_patch}x"
                  f"{cfg.evaluate.hint_patch} px):", "", "| hints | psnr | ab_error | auc |", "|---|---|---|---|"]
        lines += [f"| {n} | {row['psnr']:.2f} | {row['ab_error']:.3g} | {row['auc']:.4g} |" for n, row in hints.items()]
        written.append(plot_hints_curve(hints, cfg.evaluate.hint_patch, out / "hints.png"))
        columns = [gray, *[(f"{n} hints", samples[f"{n} hints"]) for n in hints], ("ground truth", samples["truth"])]
        written.append(save_png(labelled_grid(columns, tile=96), out / "hints_samples.png"))
    if temporal:
        from colorlab.video.clips import markdown_table

        lines += ["", f"Temporal metrics on {temporal[0]['clips']} whole held-out clips (colorlab/video/clips.py; "
                  "warp error along the exact flow):", "", *markdown_table(temporal)]
    (out / "metrics.md").write_text("\n".join(lines) + "\n")
    written.append(save_png(sample_grid(samples[evaluation.decoding], samples["truth"]), out / "samples.png"))
    if len(decodings) > 1:
        columns = [gray, *[(name, samples[name]) for name in decodings], ("ground truth", samples["truth"])]
        written.append(save_png(labelled_grid(columns, tile=96), out / "temperature_samples.png"))
        written.append(plot_temperature_tradeoff(results, decodings, out / "temperature.png"))
    return written


def plot_temperature_tradeoff(results: dict, decodings: dict, path: Path) -> Path:
    """Colourfulness against AuC over T, each point labelled with its T (seed 002's trade-off)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(decodings)
    t = [decodings[n] for n in names]
    colourfulness = [results[n]["colorfulness"] for n in names]
    auc = [results[n]["auc"] for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axes[0].plot(auc, colourfulness, "o-")
    for x, y, temperature in zip(auc, colourfulness, t, strict=True):
        axes[0].annotate(f"T={temperature:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    axes[0].axhline(results[names[0]]["colorfulness_true"], color="gray", ls="--", lw=1, label="ground truth")
    axes[0].set(xlabel="AuC of the ab error curve (higher: closer to the truth)", ylabel="colourfulness",
                title="mode (T→0) to mean (T=1)")
    axes[0].legend(fontsize=8)
    axes[1].plot(t, colourfulness, "o-", label="colourfulness")
    axes[1].set(xlabel="temperature T", ylabel="colourfulness", title="colourfulness falls as T rises")
    twin = axes[1].twinx()
    twin.plot(t, auc, "s--", color="tab:orange", label="AuC")
    twin.set_ylabel("AuC", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    from colorlab.models import load_colorizer
    from colorlab.models.bins import check_frequent_decode

    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        options, overrides, _ = split_arguments(argv, ("ckpt", "out"))
        # protocol=NAME is short for evaluate.protocol=NAME (a paper's layout, colorlab/evaluation/)
        overrides = [f"evaluate.{a}" if a.startswith("protocol=") else a for a in overrides]
        if "ckpt" not in options:
            raise ConfigError("missing ckpt=PATH (a checkpoint written by colorlab.fit)")
        checkpoint = Path(options["ckpt"])
        model = load_colorizer(checkpoint, compute_device())
        cfg = override(OmegaConf.create(model.config), overrides)
        if cfg.evaluate.protocol not in PROTOCOLS:
            raise ConfigError(f"evaluate.protocol={cfg.evaluate.protocol!r} is not a protocol; valid: "
                              f"{', '.join(p for p in PROTOCOLS if p)} (or null: none)")
        if any(t < 0 for t in cfg.evaluate.temperatures):
            raise ConfigError(f"evaluate.temperatures must be >= 0. Got {list(cfg.evaluate.temperatures)}")
        if hasattr(model, "frequent_decode"):  # a decoding choice: model.frequent_decode=kept decodes as before
            model.frequent_decode = check_frequent_decode(cfg.model.get("frequent_decode", "grid"))
    except (ConfigError, FileNotFoundError, ValueError) as e:
        return error("evaluate", e)
    out = Path(options.get("out", checkpoint.resolve().parent.parent / "evaluate"))
    try:
        if cfg.evaluate.protocol in ("zhang16", "zhang17"):  # a layout of its own, on data.root's images
            from colorlab.evaluation.zhang import run_protocol

            written = run_protocol(model, cfg, out)
            print((out / "protocol.md").read_text(), end="")
            print("written: " + ", ".join(str(p) for p in written))
            return 0
        evaluation = evaluate(model, cfg)
    except (ConfigError, MetricWeightsError) as e:
        return error("evaluate", e)
    written = write_report(evaluation, model, out, checkpoint, cfg)
    print((out / "metrics.md").read_text(), end="")
    print("written: " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
