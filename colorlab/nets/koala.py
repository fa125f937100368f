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
    encoder output, mixed by a 1x1 conv. With ``embed_dim`` 0 there is no fusion (seed 000's
    "fusion optional"). Decoder: convs and three nearest 2x upsamplings back to H x W.
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
        self.fusion = ConvNormAct(4 * w + embed_dim, 4 * w, kernel_size=1) if embed_dim else None
        self.decoder = nn.ModuleList([
            ConvNormAct(4 * w, 2 * w),
            nn.Sequential(ConvNormAct(2 * w, w), ConvNormAct(w, w)),
            ConvNormAct(w, w // 2),
        ])
        self.head = nn.Conv2d(w // 2, out_channels, kernel_size=3, padding=1)

    def forward(self, l: Tensor, embedding: Tensor | None = None) -> Tensor:
        check_input_size(l, self.size_multiple, "koala")
        x = self.encoder(l)  # (B, 4w, H/8, W/8)
        if self.fusion is not None:
            if embedding is None or embedding.shape != (l.shape[0], self.embed_dim):
                got = None if embedding is None else tuple(embedding.shape)
                raise ValueError(f"koala with embed_dim={self.embed_dim} needs an embedding of shape "
                                 f"(B, {self.embed_dim}). Got {got}")
            grid = embedding.to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[-2:])
            x = self.fusion(torch.cat([x, grid], dim=1))
        for block in self.decoder:
            x = F.interpolate(block(x), scale_factor=2.0, mode="nearest")
        return self.head(x)
