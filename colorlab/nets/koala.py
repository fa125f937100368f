"""Deep Koalarization (Baldassarre et al. 2017; Iizuka et al. 2016; seeds 000, 003, 004):
encoder -> fusion with a global image embedding -> decoder with upsampling."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from colorlab.nets.layers import ConvNormAct, check_input_size


class Koala(nn.Module):
    """L (B, in_channels, H, W) [+ embedding (B, embed_dim)] -> maps (B, out_channels, H, W).

    Encoder: 8 conv 3x3, strides 2,1,2,1,2,1,1,1 -> (B, 4w, H/8, W/8) (w = ``width``; 64 in the
    paper). Fusion: the embedding replicated over the H/8 x W/8 grid, concatenated with the
    encoder output, mixed by a 1x1 conv, then BN and ReLU. With ``embed_dim`` 0 there is no
    fusion (seed 000's "fusion optional"). Decoder: convs and three nearest 2x upsamplings.

    A 1x1 conv over [x; e replicated] equals W_x x + W_e e with W_e e broadcast over the grid, so
    the fusion computes W_e e once per image instead of materialising a (B, embed_dim, H/8, W/8)
    copy; ``fusion_weight()`` returns the equivalent 1x1 conv weight.
    """

    def __init__(self, out_channels: int, in_channels: int = 1, width: int = 64, embed_dim: int = 0):
        super().__init__()
        self.output_stride, self.size_multiple, self.embed_dim = 1, 8, embed_dim
        w = width
        plan = [(w, 2), (2 * w, 1), (2 * w, 2), (4 * w, 1), (4 * w, 2), (8 * w, 1), (8 * w, 1), (4 * w, 1)]
        layers, channels = [], in_channels
        for out, stride in plan:
            layers.append(ConvNormAct(channels, out, stride))
            channels = out
        self.encoder = nn.Sequential(*layers)
        if embed_dim:
            self.fuse_features = nn.Conv2d(4 * w, 4 * w, kernel_size=1, bias=False)
            self.fuse_embedding = nn.Linear(embed_dim, 4 * w, bias=False)
            self.fuse_norm = nn.Sequential(nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True))
        self.decoder = nn.ModuleList([
            ConvNormAct(4 * w, 2 * w),
            nn.Sequential(ConvNormAct(2 * w, w), ConvNormAct(w, w)),
            ConvNormAct(w, w // 2),
        ])
        self.head = nn.Conv2d(w // 2, out_channels, kernel_size=3, padding=1)

    def forward(self, l: Tensor, embedding: Tensor | None = None) -> Tensor:
        check_input_size(l, self.size_multiple, "koala")
        x = self.encoder(l)  # (B, 4w, H/8, W/8)
        if self.embed_dim:
            if embedding is None or embedding.shape != (l.shape[0], self.embed_dim):
                got = None if embedding is None else tuple(embedding.shape)
                raise ValueError(f"koala with embed_dim={self.embed_dim} needs an embedding of shape "
                                 f"(B, {self.embed_dim}). Got {got}")
            global_term = self.fuse_embedding(embedding.to(x.dtype))[:, :, None, None]  # (B, 4w, 1, 1)
            x = self.fuse_norm(self.fuse_features(x) + global_term)
        for block in self.decoder:
            x = F.interpolate(block(x), scale_factor=2.0, mode="nearest")
        return self.head(x)

    def fusion_weight(self) -> Tensor:
        """The 1x1 conv weight (4w, 4w + embed_dim, 1, 1) over [features; replicated embedding]."""
        return torch.cat([self.fuse_features.weight, self.fuse_embedding.weight[:, :, None, None]], dim=1)
