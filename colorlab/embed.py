"""Global image embeddings from timm's Inception-ResNet-v2, computed once per image and cached.

The embedder sees the *whole* gray image (not the training crop): L replicated to 3 channels,
resized to 299 x 299, scaled to [-1, 1] (Baldassarre et al. 2017). It returns the 1000 ImageNet
logits (seeds 003, 004) or the 1536-d pooled features. IRN2 has 56 M parameters and costs about
a second per image on a laptop CPU, so each dataset split is embedded once, stored as one table
(n_items, dim) on disk, and looked up by item id in every later epoch and run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from colorlab.color import uint8_to_lab
from colorlab.config import compute_device
from colorlab.io import atomic_save

MODEL_NAME = "inception_resnet_v2"
PRETRAINED_TAG = "inception_resnet_v2.tf_in1k"
OUTPUT_DIMS = {"logits": 1000, "pooled": 1536}
WAIT_SECONDS = 3600  # how long a non-zero rank waits for rank 0's table


class EmbedWeightsError(RuntimeError):
    """The configured IRN2 weights cannot be found; the message says how to provide them."""


HOW_TO_PROVIDE = (
    "Provide the weights in one of three ways: embed.weights=/path/to/inception_resnet_v2.pth "
    "(or .safetensors; a timm state dict), embed.weights=hub with the Hugging Face cache filled on a "
    f"connected machine (python -c \"import timm; timm.create_model('{PRETRAINED_TAG}', pretrained=True)\"), "
    "or embed.weights=random to run without semantics (the fusion then only sees random features)."
)


def build_irn2(weights: str, seed: int = 0) -> nn.Module:
    """A frozen IRN2 in eval mode. weights: 'hub', 'random' or a local file path."""
    import timm

    if weights == "random":
        warnings.warn("embed.weights=random: IRN2 has random weights, so the global features carry no "
                      "semantics; give embed.weights=hub or a weights file for real ones", stacklevel=2)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            model = timm.create_model(MODEL_NAME, pretrained=False)
    elif weights == "hub":
        import huggingface_hub.constants

        # never download at run time (the env var HF_HUB_OFFLINE is read only at import)
        huggingface_hub.constants.HF_HUB_OFFLINE = True
        try:
            model = timm.create_model(PRETRAINED_TAG, pretrained=True)
        except Exception as e:  # huggingface_hub raises several kinds for an empty cache
            raise EmbedWeightsError(f"no {PRETRAINED_TAG} weights in the offline Hugging Face cache "
                                    f"({type(e).__name__}). {HOW_TO_PROVIDE}") from e
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EmbedWeightsError(f"embed.weights={weights}: no such file. {HOW_TO_PROVIDE}")
        try:
            model = timm.create_model(MODEL_NAME, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
        except Exception as e:
            raise EmbedWeightsError(f"embed.weights={weights} is not an {MODEL_NAME} state dict: {e}") from e
    return model.eval().requires_grad_(False)


class GlobalEmbedder(nn.Module):
    """uint8 RGB (B, 3, H, W), any size -> embedding (B, dim), fp32."""

    def __init__(self, weights: str = "hub", output: str = "logits", size: int = 299, seed: int = 0):
        super().__init__()
        if output not in OUTPUT_DIMS:
            raise ValueError(f"embed.output must be one of {sorted(OUTPUT_DIMS)}. Got {output!r}")
        self.output, self.size, self.dim = output, size, OUTPUT_DIMS[output]
        self.model = build_irn2(weights, seed)

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: batch norm statistics never move

    @torch.no_grad()
    def forward(self, rgb_u8: Tensor) -> Tensor:
        gray = uint8_to_lab(rgb_u8)[:, :1] / 100.0  # L in [0, 1]
        x = F.interpolate(gray, size=(self.size, self.size), mode="bilinear", align_corners=False)
        x = (x * 2.0 - 1.0).expand(-1, 3, -1, -1)  # [-1, 1], gray replicated to 3 channels
        features = self.model.forward_features(x)
        return self.model.forward_head(features, pre_logits=self.output == "pooled").float()


def embedder_key(weights: str, output: str, size: int, seed: int) -> dict:
    if weights not in ("hub", "random"):
        if not Path(weights).expanduser().is_file():
            raise EmbedWeightsError(f"embed.weights={weights}: no such file. {HOW_TO_PROVIDE}")
        stat = Path(weights).expanduser().stat()
        weights = f"{Path(weights).name}:{stat.st_size}:{int(stat.st_mtime)}"
    return {"weights": weights, "output": output, "size": size, "seed": seed if weights == "random" else None}


def _rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def embedding_table(dataset, data_key: dict, embed_cfg: dict, seed: int, device: torch.device | str = "cpu",
                    cache_dir: str | Path = "runs/embeddings") -> Tensor:
    """Embeddings (n_items, dim) of every whole image of ``dataset`` (it has ``n_items`` and
    ``whole_image(item) -> uint8 (3, H, W)``), from the cache or computed and cached.

    Under DDP only local rank 0 computes and writes (atomically: temporary file + rename); the
    other ranks wait for the file, so none reads a half-written table.
    """
    key = {"data": data_key, "items": dataset.n_items,
           "embedder": embedder_key(embed_cfg["weights"], embed_cfg["output"], embed_cfg["size"], seed)}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{data_key.get('name', 'data')}-{data_key.get('split', '')}-{digest}.pt"
    if not path.is_file() and _rank() != 0:
        deadline = time.monotonic() + WAIT_SECONDS
        while not path.is_file():
            if time.monotonic() > deadline:
                raise TimeoutError(f"rank {_rank()} waited {WAIT_SECONDS} s for rank 0 to write {path}")
            time.sleep(1.0)
    if path.is_file():
        return torch.load(path, weights_only=True)

    embedder = GlobalEmbedder(embed_cfg["weights"], embed_cfg["output"], embed_cfg["size"], seed).to(device)
    batch_size = embed_cfg["batch_size"]
    rows = []
    for start in tqdm(range(0, dataset.n_items, batch_size), desc=f"IRN2 embeddings ({path.name})", disable=None):
        items = range(start, min(start + batch_size, dataset.n_items))
        images = [dataset.whole_image(i) for i in items]
        # whole images differ in size: resize each to the embedder's input before batching
        batch = torch.stack([F.interpolate(im[None].float(), size=(embedder.size, embedder.size), mode="bilinear",
                                           align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
                             for im in images]).to(device)
        rows.append(embedder(batch).cpu())
    table = torch.cat(rows)
    atomic_save(table, path)
    return table


def attach_embeddings(datamodule, cfg) -> None:
    """Give ``datamodule`` the embedding table of each split when ``cfg.embed.enabled``.

    Training and validation batches then carry ``embedding`` (B, dim), looked up by item id.
    """
    if not cfg.embed.enabled:
        return
    from colorlab.data.datamodule import data_identity

    datamodule.setup("fit")
    device = compute_device()
    identity = data_identity(cfg)
    for split, dataset in (("train", datamodule.train_set), ("val", datamodule.val_set)):
        datamodule.embeddings[split] = embedding_table(dataset, {**identity, "split": split}, dict(cfg.embed),
                                                       cfg.seed, device, cfg.embed.cache_dir)
