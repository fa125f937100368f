"""A trained model applied to photos of any size, with optional hints: the inference shared by the
colorize command, the app and video colourization. The network sees L at its working size; the predicted
ab is upsampled and recombined with the photo's full-resolution L, so results keep the input's size and
detail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from colorlab.color import AB_NORM, L_CENTER, L_NORM, lab_to_uint8, uint8_to_lab
from colorlab.hints import Hint, encode_hints

DEFAULT_HINT_PATCH = 3  # network pixels, when a hint gives no size
BAND_PIXELS = 1 << 18  # pixels converted at once when rendering a result: bounds its scratch memory


@dataclass
class Prepared:
    """One photo ready for repeated colourisation (the app keeps it between hint updates): 3 bytes
    per pixel at full resolution; each result recomputes the photo's L from them, exactly as Lab."""

    rgb: Tensor  # (1, 3, H, W) uint8 sRGB, full resolution
    l_small: Tensor  # (1, 1, size, size) normalised L at the network's working size
    embedding: Tensor | None  # (1, dim) global features for fusion networks

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the photo."""
        return self.rgb.shape[-2], self.rgb.shape[-1]

    def lightness(self, x: float, y: float) -> float:
        """L in [0, 100] of the photo at pixel (x, y)."""
        return float(uint8_to_lab(self.rgb[..., int(y):int(y) + 1, int(x):int(x) + 1])[0, 0, 0, 0])


@dataclass
class Result:
    rgb: np.ndarray  # uint8 (H, W, 3) at the input's size
    out: Tensor  # the network's raw output (1, C, h, w), for palettes and uncertainty
    pixels: Tensor  # (N, 3) the colourised Lab at the pixels image_palette clusters (palette_pixels)


def check_enhancement(gamma: float, saturation: float) -> None:
    if not (math.isfinite(gamma) and 0 < gamma <= 10 and math.isfinite(saturation) and 0 <= saturation <= 10):
        raise ValueError(f"gamma must be in (0, 10] and saturation in [0, 10]. Got {gamma}, {saturation}")


def enhance(lab: Tensor, gamma: float = 1.0, saturation: float = 1.0) -> np.ndarray:
    """Lab (1, 3, H, W) -> uint8 RGB (H, W, 3), chroma scaled by ``saturation`` and the RGB gamma-corrected
    (v -> 255 (v / 255)^(1 / gamma), seed 003's lookup table); 1 and 1 leave the image as it is."""
    check_enhancement(gamma, saturation)
    if saturation != 1.0:
        lab = torch.cat([lab[:, :1], lab[:, 1:] * saturation], dim=1)
    rgb = lab_to_uint8(lab)[0].permute(1, 2, 0).cpu().numpy()
    if gamma != 1.0:
        table = np.round(255.0 * (np.arange(256) / 255.0) ** (1.0 / gamma)).astype(np.uint8)
        rgb = table[rgb]
    return rgb


class PhotoColorizer:
    """A trained model applied to photos of any size, with optional hints: shared by colorize and the app."""

    def __init__(self, model, size: int | None = None, temperature: float | None = None):
        from colorlab.models.bins import BinsColorizer

        if temperature is not None and not isinstance(model, BinsColorizer):
            raise ValueError(f"temperature applies to bin formulations; this model is {model.config['model']['name']}")
        self.model, self.temperature = model, temperature
        self.band_pixels = BAND_PIXELS
        self.size = size or model.config["data"]["size"]
        multiple = model.net.size_multiple
        if self.size % multiple:
            raise ValueError(f"size must be a multiple of {multiple} for this network. Got {self.size}")
        self.device = next(model.parameters()).device
        self.embedder = None
        if model.config["embed"]["enabled"]:
            from colorlab.embed import GlobalEmbedder

            e = model.config["embed"]
            self.embedder = GlobalEmbedder(e["weights"], e["output"], e["size"], model.config["seed"]).to(self.device)

    @property
    def takes_hints(self) -> bool:
        return self.model.hint_sampling is not None

    @torch.no_grad()
    def prepare(self, rgb: np.ndarray) -> Prepared:
        """uint8 (H, W, 3), colour or gray: the photo kept as uint8 and L at the working size."""
        rgb_u8 = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(self.device)
        lightness = torch.empty(1, 1, *rgb.shape[:2], device=self.device)
        for rows in self._bands(rgb.shape[:2]):
            lightness[..., rows, :] = uint8_to_lab(rgb_u8[..., rows, :])[:, :1]
        l_norm = (lightness - L_CENTER) / L_NORM  # as normalize_lab
        del lightness
        l_small = F.interpolate(l_norm, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                antialias=True)
        return Prepared(rgb_u8, l_small, self.embedder(rgb_u8) if self.embedder is not None else None)

    @torch.no_grad()
    def predict(self, prepared: Prepared, hints: list[Hint] | None = None) -> Tensor:
        """Encode hints and run the network: its raw output (1, C, h, w) at the working size."""
        hint_ab = hint_mask = None
        if hints:
            if not self.takes_hints:
                raise ValueError("this checkpoint was trained without hints (hints.enabled=false), so it cannot "
                                 "use a hints file; train one with experiment=hints_unet")
            hint_ab, hint_mask = encode_hints(hints, prepared.shape, (self.size, self.size), DEFAULT_HINT_PATCH,
                                              self.device)
        return self.model(prepared.l_small, prepared.embedding, hint_ab, hint_mask)

    @torch.no_grad()
    def render(self, prepared: Prepared, out: Tensor, gamma: float = 1.0, saturation: float = 1.0) -> Result:
        """Decode the network's output, upsample ab and recombine it with the photo's full-resolution L.
        Colour conversions run on bands of rows (``band_pixels`` at a time), as in ``prepare``: tens of
        bytes per pixel of scratch memory, not the ~200 of whole-image conversions."""
        from colorlab.palette import palette_pixels

        check_enhancement(gamma, saturation)
        ab = self.model.decode(out) if self.temperature is None else self.model.decode_at(out, self.temperature)
        ab = F.interpolate(ab.float(), size=prepared.shape, mode="bilinear", align_corners=False) * AB_NORM
        lab = torch.empty(1, 3, *prepared.shape, device=ab.device)  # (1, 3, H, W)
        lab[:, 1:] = ab
        del ab
        rgb = np.empty((*prepared.shape, 3), dtype=np.uint8)
        for rows in self._bands(prepared.shape):
            lab[..., :1, rows, :] = uint8_to_lab(prepared.rgb[..., rows, :])[:, :1]
            rgb[rows] = enhance(lab[..., rows, :], gamma, saturation)
        return Result(rgb, out, palette_pixels(lab[0]))

    def _bands(self, shape: tuple[int, int]) -> list[slice]:
        """Slices of rows of an image of ``shape`` (H, W), about ``band_pixels`` pixels each."""
        step = max(1, self.band_pixels // shape[1])
        return [slice(top, top + step) for top in range(0, shape[0], step)]

    def run(self, prepared: Prepared, hints: list[Hint] | None = None, gamma: float = 1.0,
            saturation: float = 1.0) -> Result:
        """predict, then render."""
        return self.render(prepared, self.predict(prepared, hints), gamma, saturation)

    def distribution_at(self, out: Tensor, shape: tuple[int, int], x: float, y: float
                        ) -> tuple[Tensor, Tensor] | None:
        """The predicted ab distribution (probs (Q,), centres (Q, 2)) from output ``out`` at pixel (x, y) of
        an input of ``shape`` (H, W), or None."""
        if not self.model.predicts_distribution:
            return None
        probs, centers = self.model.ab_distribution(out)
        (height, width), (h, w) = shape, probs.shape[-2:]
        return probs[0, :, min(int(y * h / height), h - 1), min(int(x * w / width), w - 1)], centers

    def uncertainty(self, out: Tensor, shape: tuple[int, int]) -> Tensor | None:
        """Per-pixel entropy of the predicted distribution, upsampled to the input's ``shape`` (H, W): (H, W)
        in nats, or None."""
        if not self.model.predicts_distribution:
            return None
        entropy = self.model.pixel_entropy(out)[:, None].float()
        return F.interpolate(entropy, size=shape, mode="bilinear", align_corners=False)[0, 0]
