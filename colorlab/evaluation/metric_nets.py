"""The metric networks: FID's Inception, LPIPS's AlexNet, the classifier's VGG-16. Nothing downloads.

Each takes its weights like ``embed.weights``: ``hub`` (the file torchvision or torch-fidelity left in torch
hub's cache on a connected machine), a path to that file, or ``random`` (the whole code path without
semantics, with a warning). The metrics are torchmetrics states (sums and counts), exact under DDP.

Conventions: ``rgb`` float (B, 3, H, W) in [0, 1]; ``rgb_u8`` uint8 (B, 3, H, W).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric

# the file each library writes into <torch hub>/checkpoints/ when it first loads its pretrained weights
HUB_FILES = {"fid": "weights-inception-2015-12-05-6726825d.pth",  # torch-fidelity's FID Inception
             "lpips": "alexnet-owt-7be5be79.pth",  # torchvision's AlexNet (LPIPS's linear layers ship in torchmetrics)
             "classifier": "vgg16-397923af.pth"}  # torchvision's VGG-16, ImageNet top-1 71.6 %
FILL_CACHE = {"fid": "computing FID once with torchmetrics (FrechetInceptionDistance(feature=2048))",
              "lpips": "torchvision.models.alexnet(weights='DEFAULT')",
              "classifier": "torchvision.models.vgg16(weights='DEFAULT')"}
NAMES = {"fid": "FID", "lpips": "LPIPS", "classifier": "classification accuracy"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLASSIFIER_SIZE = 224
VERSIONS = ("real", "gray", "colorized")  # the classification test's three versions of each image


class MetricWeightsError(RuntimeError):
    """A metric network's weights cannot be found; the message names the three ways to provide them."""


def how_to_provide(metric: str, option: str | None = None) -> str:
    """``option``: how the command takes the weights, ``evaluate.{metric}_weights=`` by default."""
    key = option or f"evaluate.{metric}_weights="
    return (f"give {key}hub with {Path(torch.hub.get_dir()) / 'checkpoints' / HUB_FILES[metric]} created on a "
            f"connected machine by {FILL_CACHE[metric]}, {key}/path/to/{HUB_FILES[metric]}, or {key}random "
            "(runs without semantics: layout only)")


def weights_file(metric: str, weights: str, option: str | None = None) -> Path | None:
    """The state-dict file of ``metric``'s network ('fid', 'lpips', 'classifier'), or None for random weights
    (with a warning). Raises MetricWeightsError when the file is missing. Both name ``option``, see
    how_to_provide."""
    if weights == "random":
        warnings.warn(f"{option or f'evaluate.{metric}_weights='}random: {NAMES[metric]} runs through random "
                      "weights, so its values carry no semantics (layout only)", stacklevel=2)
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILES[metric] if weights == "hub" else Path(weights)
    if not path.expanduser().is_file():
        raise MetricWeightsError(f"{NAMES[metric]}: no weights at {path}; {how_to_provide(metric, option)}")
    return path.expanduser()


def _seeded(build, seed: int):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build()


def inception_extractor(weights: str, seed: int = 0, features: str = "2048") -> nn.Module:
    """torch-fidelity's FID Inception (torchmetrics' wrapper): uint8 (B, 3, H, W), any size -> (B, d) features
    of layer ``features`` ('64', '192', '768' or '2048', the pool features FID uses)."""
    from torch_fidelity import feature_extractor_inceptionv3
    from torchmetrics.image.fid import NoTrainInceptionV3

    path = weights_file("fid", weights)
    if path is not None:
        return NoTrainInceptionV3("inception-v3-compat", [features], str(path))

    class RandomInceptionV3(NoTrainInceptionV3):
        def load_state_dict(self, state_dict, *args, **kwargs):
            if state_dict is not None:  # None: the constructor's own load, skipped to keep the seeded init
                return super().load_state_dict(state_dict, *args, **kwargs)

    # with no path torch-fidelity would download its weights: its loader is replaced for this construction
    original = feature_extractor_inceptionv3.load_state_dict_from_url
    feature_extractor_inceptionv3.load_state_dict_from_url = lambda *args, **kwargs: None
    try:
        extractor = _seeded(lambda: RandomInceptionV3("inception-v3-compat", [features]), seed)
    finally:
        feature_extractor_inceptionv3.load_state_dict_from_url = original
    # PyTorch's default init shrinks activations about 3x per layer: the 2048 features would be ~1e-8, so
    # every FID ~0. He init keeps them O(1), and random FIDs then tell sets apart (without semantics).
    generator = torch.Generator().manual_seed(seed)
    for module in extractor.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * (2.0 / fan_in) ** 0.5)
    return extractor


def fid_metric(extractor: nn.Module):
    """torchmetrics' FrechetInceptionDistance on the features of ``extractor`` (uint8 images in, (B, d) out):
    update(rgb_u8, real=True|False), compute() -> FID. Several metrics may share one extractor."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    return FrechetInceptionDistance(feature=extractor, reset_real_features=True)


class LPIPS(Metric):
    """Mean LPIPS (Zhang et al. 2018, AlexNet backbone, torchmetrics' linear layers) between two sets of
    images: update(rgb_pred, rgb_true), (B, 3, H, W) in [0, 1]; 0 for identical images."""

    full_state_update = False

    def __init__(self, weights: str = "hub", seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        from torchmetrics.functional.image.lpips import _NoTrainLpips

        path = weights_file("lpips", weights)
        # pnet_rand: torchvision's backbone starts random (never downloaded); the linear layers load from
        # the file inside torchmetrics; the backbone weights are loaded below from the chosen file
        self.net = _seeded(lambda: _NoTrainLpips(net="alex", pnet_rand=True), seed)
        if path is not None:
            features = {k.removeprefix("features."): v for k, v in torch.load(path, map_location="cpu",
                                                                              weights_only=True).items()}
            backbone = self.net.net
            for block in (backbone.slice1, backbone.slice2, backbone.slice3, backbone.slice4, backbone.slice5):
                for index, layer in block.named_children():
                    layer.load_state_dict({k: features[f"{index}.{k}"] for k in layer.state_dict()})
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, rgb_pred: Tensor, rgb_true: Tensor) -> None:
        scores = self.net(rgb_pred.float().clamp(0, 1), rgb_true.float().clamp(0, 1), normalize=True)  # (B,1,1,1)
        self.total += scores.double().sum()
        self.count += scores.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count.clamp_min(1)).float()


def build_classifier(weights: str, seed: int = 0) -> nn.Module:
    """torchvision's VGG-16 (Zhang et al. 2016's semantic test) in eval mode: ImageNet-normalised
    (B, 3, 224, 224) -> (B, 1000) logits."""
    import torchvision

    path = weights_file("classifier", weights)
    model = _seeded(lambda: torchvision.models.vgg16(weights=None), seed)
    if path is not None:
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False)


def imagenet_input(rgb: Tensor, size: int = CLASSIFIER_SIZE) -> Tensor:
    """rgb (B, 3, H, W) in [0, 1] -> ImageNet-normalised (B, 3, size, size), bilinearly resized."""
    x = F.interpolate(rgb.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    mean, std = (torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    return (x - mean) / std


class ClassificationAccuracy(Metric):
    """Top-1 accuracy of ``classifier`` on the real, gray and colourised versions of labelled images
    (Zhang et al. 2016's semantic interpretability test).

    update(version, rgb, labels): version in VERSIONS, rgb (B, 3, H, W) in [0, 1], labels (B,) class indices.
    compute() -> {'classify_real': ..., 'classify_gray': ..., 'classify_colorized': ...} in [0, 1].
    """

    full_state_update = False

    def __init__(self, classifier: nn.Module, **kwargs):
        super().__init__(**kwargs)
        self.classifier = classifier
        self.add_state("correct", torch.zeros(len(VERSIONS), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(len(VERSIONS), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, version: str, rgb: Tensor, labels: Tensor) -> None:
        if version not in VERSIONS:
            raise ValueError(f"version must be one of {VERSIONS}. Got {version!r}")
        i = VERSIONS.index(version)
        predicted = self.classifier(imagenet_input(rgb)).argmax(dim=1)
        self.correct[i] += (predicted == labels.to(predicted.device)).sum()
        self.count[i] += labels.numel()

    def compute(self) -> dict[str, Tensor]:
        accuracy = self.correct.double() / self.count.clamp_min(1)
        return {f"classify_{v}": accuracy[i].float() for i, v in enumerate(VERSIONS) if self.count[i] > 0}


def metric_factories(evaluate_cfg, seed: int = 0) -> dict:
    """Factories of the FID and LPIPS metrics that ``evaluate_cfg`` (the ``evaluate`` config) turns on
    and whose weights are found; a metric whose weights are missing is skipped with one line naming the
    three ways to provide them. The FID metrics share one Inception."""
    factories = {}
    if evaluate_cfg.get("fid", True):
        try:
            extractor = inception_extractor(evaluate_cfg.get("fid_weights", "hub"), seed)
            extractor.num_features = 2048  # spares torchmetrics a dummy forward pass per metric
            factories["fid"] = lambda: fid_metric(extractor)
        except (ImportError, MetricWeightsError) as e:
            reason = "needs `pip install torch-fidelity`" if isinstance(e, ImportError) else str(e)
            print(f"FID skipped: {reason}; evaluate.fid=false hides this line")
    if evaluate_cfg.get("lpips", True):
        weights = evaluate_cfg.get("lpips_weights", "hub")
        try:
            if weights != "random":
                weights_file("lpips", weights)  # a missing file fails here, once, not per decoding
            factories["lpips"] = lambda: LPIPS(weights, seed)
        except MetricWeightsError as e:
            print(f"LPIPS skipped: {e}; evaluate.lpips=false hides this line")
    return factories
