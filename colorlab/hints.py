"""User colour hints (Zhang et al. 2017, seed 003): synthetic hints for training and evaluation,
and a person's points for colorize and the app.

A hint is a square patch of the network's input with a known ab. The network sees three extra
channels: ``hint_ab`` (B, 2, H, W), normalised ab (ab / AB_NORM) inside hinted patches and 0
elsewhere, and ``hint_mask`` (B, 1, H, W), 1 inside hinted patches and 0 elsewhere.

Synthetic hints, all drawn on the batch's device for the whole batch at once, in shapes fixed by the
scheme (``max_hints`` patches per image, of which the first n are used), so that a training step never
reads a value back on the host:
- number of hints per image ~ Geometric(p): P(n = k) = (1 - p)^k p, mean (1 - p) / p (7 for
  p = 1/8, as in colorization-pytorch's loop), truncated at ``max_hints``;
- patch side uniform in patch_min..patch_max;
- patch corner ~ N((H - P + 1) / 2, ((H - P + 1) / 4)^2) per axis, clipped into the image;
- hint value = the mean ab of the ground truth over the patch (from a summed-area table);
- with probability ``full_reveal`` the whole image is the hint (seed 003).
Later patches paint over earlier ones where they overlap, as in the reference loop.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from colorlab.color import AB_NORM, rgb_to_lab


@dataclass(frozen=True)
class HintSampling:
    """The synthetic-hint scheme; every field is a key of the ``hints`` config group."""

    p: float = 1 / 8
    patch_min: int = 1
    patch_max: int = 9
    full_reveal: float = 0.05
    max_hints: int = 64  # P(n > 64) = (7/8)^65 ~ 2e-4 for p = 1/8
    drop: float = 0.0  # training only: probability that an image gets no hints at all (video_propagate)
    carry_chroma_min: float = 1.0  # training only (video_propagate): carried colours' chroma x U(this, 1)
    carry_blur: float = 0.0  # training only (video_propagate): carried colours blurred, sigma U(0, this) px
    carry_wrong: float = 0.0  # training only (video_propagate): probability of a wrongly coloured square
    carry_self: float = 0.0  # training only (video_propagate): probability that the carried colours are the
    # network's own prediction for frame t-1 (hinted with its degraded truth), not the degraded truth

    def __post_init__(self):
        if not 0 < self.p <= 1:
            raise ValueError(f"hints.p must be in (0, 1]. Got {self.p}")
        if not 1 <= self.patch_min <= self.patch_max:
            raise ValueError(f"need 1 <= hints.patch_min <= hints.patch_max. Got {self.patch_min}, {self.patch_max}")
        if not 0 <= self.full_reveal <= 1:
            raise ValueError(f"hints.full_reveal must be in [0, 1]. Got {self.full_reveal}")
        if self.max_hints < 0:
            raise ValueError(f"hints.max_hints must be >= 0. Got {self.max_hints}")
        if not 0 <= self.drop <= 1:
            raise ValueError(f"hints.drop must be a probability in [0, 1]. Got {self.drop}")
        if not 0 <= self.carry_chroma_min <= 1:
            raise ValueError(f"hints.carry_chroma_min must be in [0, 1] (1: carried colours unchanged). "
                             f"Got {self.carry_chroma_min}")
        if not 0 <= self.carry_wrong <= 1:
            raise ValueError(f"hints.carry_wrong must be a probability in [0, 1]. Got {self.carry_wrong}")
        if not 0 <= self.carry_self <= 1:
            raise ValueError(f"hints.carry_self must be a probability in [0, 1]. Got {self.carry_self}")
        if self.carry_blur < 0:
            raise ValueError(f"hints.carry_blur must be >= 0 px (0: no blur). Got {self.carry_blur}")


def _uniform(shape, device, generator) -> Tensor:
    return torch.rand(shape, device=device, generator=generator)


@dataclass
class HintLayout:
    """Where the synthetic hints of a batch go: ``n`` (B,) hints per image; ``top``, ``left`` and
    ``sizes`` (B, K) patch corners and sides; ``valid`` (B, K) marks the first n[b] of each row;
    ``reveal`` (B,) images shown whole."""

    n: Tensor
    top: Tensor
    left: Tensor
    sizes: Tensor
    valid: Tensor
    reveal: Tensor


def draw_layout(b: int, h: int, w: int, sampling: HintSampling, device, generator: torch.Generator | None = None,
                n_hints: int | None = None, patch: int | None = None) -> HintLayout:
    """Draw the hints of B images of H x W (see the module docstring); fixed ``n_hints``/``patch``
    for the evaluation protocol (no full reveal then)."""
    if n_hints is None:
        # inverse-CDF geometric: floor(log U / log(1 - p)) has P(n >= k) = (1 - p)^k
        u = _uniform((b,), device, generator).clamp_min(1e-12)
        log_q = math.log1p(-sampling.p) if sampling.p < 1 else -math.inf  # a Python number: no copy to the device
        n = torch.floor(torch.log(u) / log_q)
        n = torch.nan_to_num(n, nan=0.0).clamp(min=0, max=sampling.max_hints).long()  # p = 1: log U / -inf = 0
        reveal = _uniform((b,), device, generator) < sampling.full_reveal
    else:
        n = torch.full((b,), n_hints, device=device, dtype=torch.long)
        reveal = torch.zeros(b, dtype=torch.bool, device=device)
    # K is fixed by the scheme, not by this draw's n.max(): reading that would make the host wait for the
    # device every training step (patches beyond an image's n are drawn and left invalid)
    k = sampling.max_hints if n_hints is None else n_hints
    if patch is None:
        span = sampling.patch_max - sampling.patch_min + 1
        sizes = sampling.patch_min + (_uniform((b, k), device, generator) * span).long().clamp(max=span - 1)
    else:
        sizes = torch.full((b, k), patch, device=device, dtype=torch.long)
    sizes = sizes.clamp(max=min(h, w))
    top = _normal_corner(h, sizes, device, generator)
    left = _normal_corner(w, sizes, device, generator)
    valid = torch.arange(k, device=device)[None] < n[:, None]
    return HintLayout(n, top, left, sizes, valid, reveal)


def sample_hints(ab: Tensor, sampling: HintSampling, generator: torch.Generator | None = None,
                 n_hints: int | None = None, patch: int | None = None) -> tuple[Tensor, Tensor]:
    """Synthetic hints from the ground truth ab_norm (B, 2, H, W) -> (hint_ab (B, 2, H, W), hint_mask (B, 1, H, W)).

    ``n_hints``/``patch`` fix the number of hints and the patch side (the evaluation protocol:
    no full reveal then); otherwise both follow ``sampling``. ``generator`` (on ab's device)
    makes the draw reproducible; None uses the global RNG (seeded by the run's seed).
    """
    b, _, h, w = ab.shape
    layout = draw_layout(b, h, w, sampling, ab.device, generator, n_hints, patch)
    if layout.valid.shape[1] == 0:
        hint_ab, mask = torch.zeros_like(ab), torch.zeros_like(ab[:, :1])
    else:
        means = _patch_means(ab.float(), layout.top, layout.left, layout.sizes)  # (B, K, 2)
        side = patch if patch is not None else sampling.patch_max
        hint_ab, mask = paint_patches(means, layout.top, layout.left, layout.sizes, layout.valid, h, w, max_side=side)
        hint_ab, mask = hint_ab.to(ab.dtype), mask.to(ab.dtype)
    reveal = layout.reveal[:, None, None, None]
    return torch.where(reveal, ab, hint_ab), torch.where(reveal, torch.ones_like(mask), mask)


def degrade_carried(ab: Tensor, mask: Tensor, sampling: HintSampling, generator: torch.Generator | None = None
                    ) -> Tensor:
    """Carried colours ab_norm (B, 2, H, W) as a propagating network meets them at inference, where they
    are its own earlier output rather than the truth: each image's chroma scaled by U(carry_chroma_min, 1)
    (its output hedges between modes) and blurred by a Gaussian of sigma U(0, carry_blur) px (its edges
    are soft; the blur also mixes in the zeros of disoccluded pixels, so colours beside them fade);
    with probability ``carry_wrong`` one sharp square of side U(S/8, S/2), S = min(H, W), takes the
    previous image's carried colours in the batch (a shape it missed, or gray where that image carries
    none: the network must overrule carried colours that its input contradicts; none in a batch of
    one); then cut to ``mask`` (B, 1, H, W) again. Trained on the truth alone, video_propagate copied
    weak carried colours only partly, drifting towards its own prior frame after frame, and kept
    colours it had got wrong."""
    b, _, h, w = ab.shape
    if sampling.carry_chroma_min < 1:
        scale = _uniform((b, 1, 1, 1), ab.device, generator)
        ab = ab * (sampling.carry_chroma_min + (1 - sampling.carry_chroma_min) * scale).to(ab.dtype)
    if sampling.carry_blur > 0:
        sigma = (_uniform((b,), ab.device, generator) * sampling.carry_blur).clamp_min(1e-3)
        ab = gaussian_blur(ab, sigma, math.ceil(2 * sampling.carry_blur))
    if sampling.carry_wrong > 0 and b > 1:
        u = _uniform((b, 4), ab.device, generator)
        s = min(h, w)
        side = (s / 8 + u[:, 0] * (s / 2 - s / 8)).long().clamp_min(1)  # (B,)
        top = (u[:, 1] * (h - side + 1)).long()
        left = (u[:, 2] * (w - side + 1)).long()
        chosen = u[:, 3] < sampling.carry_wrong
        _, wrong = paint_patches(ab.new_zeros(b, 1, 2), top[:, None], left[:, None], side[:, None], chosen[:, None],
                                 h, w, max_side=max(1, s // 2))  # (B, 1, H, W) 1 inside the chosen squares
        ab = torch.where(wrong.bool(), ab.roll(1, dims=0), ab)
    return ab * mask


def gaussian_blur(x: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Each image of x (B, C, H, W) blurred by a Gaussian of its own sigma (B,) px, cut at ``radius`` px and
    normalised, reflecting at the border (kornia's gaussian_blur2d, which reads sigma on the host to check
    it). Separable, in fp32 under mixed precision too; x's dtype out."""
    b, c, h, w = x.shape
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-offsets**2 / (2 * sigma.float()[:, None] ** 2))  # (B, 2r+1)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, 2r+1), one per channel
    with torch.autocast(x.device.type, enabled=False):
        out = x.float().reshape(1, b * c, h, w)
        out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kernel[:, None, :, None], groups=b * c)
        out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b * c)
    return out.view(b, c, h, w).to(x.dtype)


def _normal_corner(length: int, sizes: Tensor, device, generator) -> Tensor:
    """Patch corners (B, K) ~ N((L - P + 1) / 2, ((L - P + 1) / 4)^2) clipped to [0, L - P], rounded down
    (colorization-pytorch's ``int(np.clip(np.random.normal(...), 0, L - P))``)."""
    room = (length - sizes).float()
    z = torch.randn(sizes.shape, device=device, generator=generator)
    return ((room + 1) / 2 + z * (room + 1) / 4).clamp(min=0).minimum(room).floor().long()


def _patch_means(ab: Tensor, top: Tensor, left: Tensor, sizes: Tensor) -> Tensor:
    """Mean of ab (B, 2, H, W) over each patch [top, top+P) x [left, left+P): (B, K, 2), in O(1) per patch."""
    b = ab.shape[0]
    table = torch.nn.functional.pad(ab.double().cumsum(2).cumsum(3), (1, 0, 1, 0))  # (B, 2, H+1, W+1)
    flat = table.flatten(2)  # (B, 2, (H+1)(W+1))
    stride = table.shape[-1]

    def at(y: Tensor, x: Tensor) -> Tensor:  # (B, K) -> (B, K, 2)
        index = (y * stride + x)[:, None].expand(b, 2, -1)
        return flat.gather(2, index).transpose(1, 2)

    bottom, right = top + sizes, left + sizes
    total = at(bottom, right) - at(top, right) - at(bottom, left) + at(top, left)
    return (total / (sizes * sizes)[..., None]).float()


PAINT_CHUNK = 1 << 18  # patch pixels enumerated at once: bounds paint_patches' scratch memory (~20 MB)


def paint_patches(values: Tensor, top: Tensor, left: Tensor, sizes: Tensor, valid: Tensor, h: int, w: int,
                  max_side: int | None = None, chunk: int = PAINT_CHUNK) -> tuple[Tensor, Tensor]:
    """Paint K patches per image: values (B, K, 2), top/left/sizes/valid (B, K) -> (hint_ab (B, 2, H, W),
    hint_mask (B, 1, H, W)); patches are clipped to the image.

    Where patches overlap the later one wins (the reference loop paints in order). The pixels of the
    valid patches are enumerated and scattered, ``chunk`` at a time: time O(B H W + pixels enumerated),
    scratch memory O(B H W + chunk), not O(B K H W).

    ``max_side``, a side no patch exceeds (the training scheme's patch_max): each patch enumerates that
    square, its pixels outside the patch masked, so every shape is known in advance and nothing is read on
    the host (a training step on a GPU does not wait for the device). Without it, exactly the patches'
    pixels (fewer when a few large patches come with many small ones, as a person's hints may), whose
    number is read on the host.
    """
    b, k = sizes.shape
    device = values.device
    y0, x0 = top.clamp(min=0), left.clamp(min=0)
    rows = torch.where(valid, ((top + sizes).clamp(max=h) - y0).clamp(min=0), 0)  # (B, K) painted rows; 0: none
    cols = torch.where(valid, ((left + sizes).clamp(max=w) - x0).clamp(min=0), 0)
    start = torch.arange(b, device=device)[:, None] * (h * w)  # (B, 1) each image's first pixel, flat
    origin = start + y0 * w + x0  # (B, K) each patch's first pixel, flat
    order = torch.arange(1, k + 1, device=device).expand(b, k)  # 1 + index of each patch in its image
    last = torch.zeros(b * h * w, dtype=torch.long, device=device)  # 1 + last patch covering a pixel; 0: none
    if max_side is None:
        pixels = _patch_pixels(origin, order, rows, cols, w, chunk)
    else:
        pixels = _square_pixels(start, origin, order, rows, cols, w, (min(max_side, h), min(max_side, w)), chunk)
    for pixel, patch_order in pixels:
        last.scatter_reduce_(0, pixel, patch_order, "amax")
    last = last.view(b, h * w)
    mask = (last > 0).float().view(b, 1, h, w)
    padded = torch.cat([torch.zeros_like(values[:, :1]), values], dim=1)  # index 0 = no hint
    hint_ab = padded.gather(1, last[..., None].expand(-1, -1, 2))  # (B, H*W, 2)
    return hint_ab.transpose(1, 2).reshape(b, 2, h, w) * mask, mask


def _square_pixels(start: Tensor, origin: Tensor, order: Tensor, rows: Tensor, cols: Tensor, w: int,
                   box: tuple[int, int], chunk: int):
    """(flat pixel, patch order) for every cell of each patch's box (rows x cols of the box are the patch's):
    cells outside the patch give order 0, which ``amax`` ignores, at the cell's own offset from its image's
    first pixel (spread over box_h * box_w <= H * W pixels rather than piled on one). Chunks of whole patches."""
    b, k = origin.shape
    dy = torch.arange(box[0], device=origin.device)[:, None]  # (box_h, 1)
    dx = torch.arange(box[1], device=origin.device)[None, :]  # (1, box_w)
    spare = start[:, :, None, None] + dy * box[1] + dx  # (B, 1, box_h, box_w): where masked cells write
    step = max(1, chunk // max(1, b * box[0] * box[1]))
    for first in range(0, k, step):
        part = slice(first, first + step)
        inside = (dy < rows[:, part, None, None]) & (dx < cols[:, part, None, None])  # (B, k', box_h, box_w)
        pixel = torch.where(inside, origin[:, part, None, None] + dy * w + dx, spare)
        yield pixel.flatten(), torch.where(inside, order[:, part, None, None], 0).flatten()


def _patch_pixels(origin: Tensor, order: Tensor, rows: Tensor, cols: Tensor, w: int, chunk: int):
    """(flat pixel, patch order) for exactly the patches' pixels, ``chunk`` at a time (a chunk may split a
    patch); their count is read on the host."""
    origin, order, cols = origin.flatten(), order.flatten(), cols.flatten()
    area = rows.flatten() * cols  # (B*K,) painted pixels per patch
    end = area.cumsum(0)
    total, done, first = int(end[-1]) if len(end) else 0, 0, 0
    while done < total:
        stop = max(int(torch.searchsorted(end, done + chunk, right=True)), first + 1)  # patches [first, stop)
        count = int(end[stop - 1]) - done
        patch = torch.repeat_interleave(torch.arange(first, stop, device=origin.device), area[first:stop],
                                        output_size=count)  # (count,) the patch of each painted pixel
        inside = torch.arange(done, done + count, device=origin.device) - (end - area)[patch]  # row-major
        yield origin[patch] + inside // cols[patch] * w + inside % cols[patch], order[patch]
        done, first = done + count, stop


# --- a person's hints: JSON points on the input image ------------------------------------------

class HintsError(ValueError):
    """A hints file or point that cannot be used; the message names the point and what is valid."""


HINT_KEYS = {"x", "y", "color", "ab", "size"}
MAX_HINTS = 1000  # per request of the app and per hints file: a person clicks tens


def _number(value) -> bool:
    """A finite JSON number (not a bool)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


def parse_point(point, width: int, height: int, where: str) -> tuple[float, float]:
    """x and y of a point ({"x": .., "y": ..}), finite and inside the image, or a HintsError naming ``where``."""
    for key in ("x", "y"):
        if not _number(point.get(key)):
            raise HintsError(f"{where}: {key} must be a finite number (pixels). Got {point.get(key)!r}"[:300])
    x, y = float(point["x"]), float(point["y"])
    if not (0 <= x < width and 0 <= y < height):
        raise HintsError(f"{where}: ({x:g}, {y:g}) is outside the image; valid: 0 <= x < {width}, "
                         f"0 <= y < {height}")
    return x, y
_HEX = re.compile(r"^#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})$")


def color_to_ab(color: str) -> tuple[float, float]:
    """'#rrggbb' or '#rgb' -> its (a, b) in Lab units (the colour's lightness is not used: L comes from the photo)."""
    match = _HEX.match(color.strip()) if isinstance(color, str) else None
    if match is None:
        raise HintsError(f"color must be '#rrggbb' or '#rgb'. Got {color!r}")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    rgb = torch.tensor([int(digits[i:i + 2], 16) / 255 for i in (0, 2, 4)]).view(1, 3, 1, 1)
    lab = rgb_to_lab(rgb)[0, :, 0, 0]
    return float(lab[1]), float(lab[2])


@dataclass(frozen=True)
class Hint:
    """One point in pixels of the input image, its ab in Lab units, its patch side in input pixels (None: default)."""

    x: float
    y: float
    ab: tuple[float, float]
    size: float | None = None


def parse_hints(points, width: int, height: int, max_hints: int = MAX_HINTS) -> list[Hint]:
    """A JSON list of {x, y, color | ab, [size]} -> Hints, checked against the image size: at most
    ``max_hints`` points, finite coordinates inside the image, ab in [-128, 127], size in (0, max(W, H)]."""
    if not isinstance(points, list):
        raise HintsError(f"hints must be a JSON list of points like [{{\"x\": 120, \"y\": 64, \"color\": "
                         f"\"#d02020\"}}]. Got {type(points).__name__}")
    if len(points) > max_hints:
        raise HintsError(f"{len(points)} hints; at most {max_hints} are accepted")
    hints = []
    for i, point in enumerate(points):
        where = f"hint {i}"
        if not isinstance(point, dict):
            raise HintsError(f"{where}: must be an object with x, y and color or ab. Got {point!r}"[:300])
        if unknown := set(point) - HINT_KEYS:
            raise HintsError(f"{where}: unknown keys {sorted(unknown)}; valid: {sorted(HINT_KEYS)}"[:300])
        x, y = parse_point(point, width, height, where)
        if ("color" in point) == ("ab" in point):
            raise HintsError(f"{where}: give exactly one of color ('#rrggbb') or ab ([a, b] in Lab units)")
        if "color" in point:
            try:
                ab = color_to_ab(point["color"])
            except HintsError as e:
                raise HintsError(f"{where}: {e}") from None
        else:
            ab = point["ab"]
            if not isinstance(ab, list) or len(ab) != 2 or not all(_number(v) and -128 <= v <= 127 for v in ab):
                raise HintsError(f"{where}: ab must be [a, b] with numbers in [-128, 127]. Got {ab!r}"[:300])
            ab = (float(ab[0]), float(ab[1]))
        size = point.get("size")
        if size is not None and not (_number(size) and 0 < size <= max(width, height)):
            raise HintsError(f"{where}: size must be a number of pixels in (0, {max(width, height)}]. "
                             f"Got {size!r}"[:300])
        hints.append(Hint(x, y, ab, None if size is None else float(size)))
    return hints


def load_hints(path: str | Path, width: int, height: int) -> list[Hint]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hints file {path} does not exist")
    try:
        points = json.loads(path.read_text())
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit number
        raise HintsError(f"{path} is not valid JSON: {e}") from None
    try:
        return parse_hints(points, width, height)
    except HintsError as e:
        raise HintsError(f"{path}: {e}") from None


def encode_hints(hints: list[Hint], image_size: tuple[int, int], net_size: tuple[int, int],
                 default_patch: int = 3, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Points on the input image (height, width) -> (hint_ab (1, 2, h, w), hint_mask (1, 1, h, w)) at the
    network's size (h, w). A point's patch is centred on it; its side is ``size`` input pixels scaled to
    the network (at least 1), or ``default_patch`` network pixels."""
    (height, width), (h, w) = image_size, net_size
    if not hints:
        return torch.zeros(1, 2, h, w, device=device), torch.zeros(1, 1, h, w, device=device)
    scale = min(h / height, w / width)
    sizes = torch.tensor([[default_patch if p.size is None else max(1, round(p.size * scale)) for p in hints]],
                         device=device).clamp(max=min(h, w))
    cy = torch.tensor([[int(p.y * h / height) for p in hints]], device=device)
    cx = torch.tensor([[int(p.x * w / width) for p in hints]], device=device)
    top = (cy - (sizes - 1) // 2).clamp(min=0).minimum(h - sizes)
    left = (cx - (sizes - 1) // 2).clamp(min=0).minimum(w - sizes)
    values = torch.tensor([[p.ab for p in hints]], device=device, dtype=torch.float32) / AB_NORM
    return paint_patches(values, top, left, sizes, torch.ones_like(sizes, dtype=torch.bool), h, w)
