"""The interactive page for user-guided colourization:
``python -m colorlab.app ckpt=PATH [port=8765] [host=127.0.0.1] [max_upload_mb=10] [max_megapixels=4]
[allowed_hosts=NAME,...] [size=N]``.

Upload a photo and see the automatic colourization; click a point to add a hint (colour picker,
or one of the colours suggested for that point); the result updates after each hint; undo, clear,
download. An optional overlay shows the model's per-pixel uncertainty (entropy of its ab
distribution), where a hint helps most. Serves on 127.0.0.1 unless told otherwise (Starlette under
uvicorn, see colorlab.web); uploads over ``max_upload_mb`` or that do not decode as an image are
refused with a message on the page, photos over ``max_megapixels`` are downscaled to it (said on the
page), at most 256 hints per request; requests whose Host is neither 127.0.0.1, localhost nor one of
``allowed_hosts``, or whose Origin is not such a name on the server's port, get 403. Slow and idle clients
are handled as colorlab.web describes (a deadline for request heads, thousands of idle connections held).
Memory: a kept upload is the photo as uint8 (3 bytes per pixel) plus ~0.3 MB at the working size, so
16 uploads at the default 4 MP budget keep ~200 MB; photos are decoded one at a time and not while a
result is rendered, up to 8 x ``max_megapixels`` (larger ones get 413), and colour conversions run on
bands of rows, so the request in progress adds ~40 bytes per pixel of the budget at its peak, ~9 per
pixel of the photo when decoding one over the budget (see docs/benchmarks.md for measured figures).

JSON API (what the page uses): POST /api/upload (the file's bytes) -> {id, width, height, gray,
result, palette}; POST /api/colorize {id, hints, uncertainty} -> {result, uncertainty};
POST /api/palette {id, x, y, hints} -> {point, image}. Images are PNG data URLs.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import io
import math
import sys
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
from PIL import Image
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from torch import Tensor

from colorlab import web
from colorlab.cli import error
from colorlab.config import compute_device, key_value_options, usage_exit_code
from colorlab.hints import Hint, HintsError, parse_hints, parse_point
from colorlab.inference import PhotoColorizer, Prepared
from colorlab.io import UnreadableImage, read_rgb_within
from colorlab.web import (
    DEFAULT_HOSTS,
    AllowedHosts,
    HTTPError,
    error_response,
    json_error_handlers,
    read_body,
    read_json,
)

OPTIONS = ("ckpt", "port", "host", "max_upload_mb", "size", "max_megapixels", "allowed_hosts")
MAX_IMAGES = 16  # uploads kept in memory (least recently used dropped)
MAX_JSON_BYTES = 256 * 1024  # /api/colorize and /api/palette: MAX_HINTS points fit in ~100 KB
MAX_HINTS = 256  # per request of the page
MAX_REQUESTS = 128  # in progress at once (503 beyond); each buffers at most max_upload_mb of body
DECODE_FACTOR = 8  # photos of up to 8 x max_megapixels are decoded (then downscaled); larger ones get 413
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters
MMAP_THRESHOLD = 8 * 2**20  # blocks of 8 MB and more (images, tensors) are mapped and unmapped on their own
LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if ctypes.util.find_library("c") else None
if LIBC is not None and not hasattr(LIBC, "malloc_trim"):  # not glibc
    LIBC = None


def data_url(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def uncertainty_overlay(entropy: torch.Tensor, band_pixels: int = 1 << 18) -> np.ndarray:
    """Entropy (H, W) in nats -> uint8 RGBA heat map (H, W, 4): transparent where certain, red where not.
    Computed on bands of ``band_pixels`` pixels: a few bytes per pixel beyond the map, not ~60 of float
    channels stacked for the whole image."""
    e = entropy.float().cpu()
    low, spread = e.min(), (e.max() - e.min()).clamp_min(1e-6)
    rgba = np.zeros((*e.shape, 4), dtype=np.uint8)  # blue stays 0
    rgba[..., 0] = 255
    step = max(1, band_pixels // max(1, e.shape[1]))
    for top in range(0, e.shape[0], step):
        scale = (e[top:top + step] - low) / spread  # 0..1 over this image
        rgba[top:top + step, :, 1] = (60 * (1 - scale)).round().to(torch.uint8).numpy()
        rgba[top:top + step, :, 3] = (150 * scale).round().to(torch.uint8).numpy()
    return rgba


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc keeps it otherwise); a no-op elsewhere."""
    if LIBC is not None:
        LIBC.malloc_trim(0)


def limit_heap() -> None:
    """glibc settings for a long-running server, before its threads start (a no-op elsewhere): worker
    threads share two heaps instead of one each; blocks of MMAP_THRESHOLD and more are mapped on their own
    and returned to the system when freed (by default the threshold grows up to 32 MB with the blocks
    freed, after which large images stay in the heaps and RSS creeps up with concurrency); and the
    heaps' tops are returned beyond MMAP_THRESHOLD."""
    if LIBC is not None:
        LIBC.mallopt(M_ARENA_MAX, 2)
        LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        LIBC.mallopt(M_TRIM_THRESHOLD, MMAP_THRESHOLD)


@dataclass
class Upload:
    """A photo kept between requests (3 bytes per pixel) with the network's output under its latest hints
    (a click asks for the palette at the point under the current hints, then for the result with the new
    hint: the first reuses it) and the pixels of its image palette."""

    prepared: Prepared
    hints: tuple[Hint, ...] = ()
    out: Tensor | None = None  # (1, C, h, w) at the working size
    pixels: Tensor | None = None  # (N, 3) Lab, see colorlab.palette.palette_pixels


class ColorizeService:
    """Everything the page does, independent of HTTP (the endpoints only parse and serialise).
    Errors are HTTPErrors (status and message)."""

    def __init__(self, colorizer: PhotoColorizer, max_upload_bytes: int, max_megapixels: float = 4.0):
        self.colorizer, self.max_upload_bytes, self.max_megapixels = colorizer, max_upload_bytes, max_megapixels
        self.images: OrderedDict[str, Upload] = OrderedDict()
        # one forward pass at a time (the model is shared), and one full-resolution image in the making, decoded
        # or rendered: the memory of requests is that of the largest one, not of as many as arrive at once
        self.lock = threading.Lock()
        self.images_lock = threading.Lock()  # the LRU dict, touched by several worker threads

    def _get(self, image_id) -> Upload:
        with self.images_lock:
            if not isinstance(image_id, str) or image_id not in self.images:
                raise HTTPError(400, "unknown image id: upload the photo again (the server keeps the latest "
                                f"{MAX_IMAGES} uploads)")
            self.images.move_to_end(image_id)
            return self.images[image_id]

    def _hints(self, upload: Upload, points) -> tuple[Hint, ...]:
        height, width = upload.prepared.shape
        try:
            hints = parse_hints([] if points is None else points, width, height, MAX_HINTS)
        except HintsError as e:
            raise HTTPError(400, str(e)) from None
        if hints and not self.colorizer.takes_hints:
            raise HTTPError(400, "this checkpoint was trained without hints; start the app with a hints_unet "
                            "checkpoint")
        return tuple(hints)

    def _result(self, upload: Upload, hints: tuple[Hint, ...], rgb: bool) -> np.ndarray | None:
        """Runs the network when the hints changed (holds the lock); the colourised uint8 RGB (H, W, 3) when
        ``rgb`` (rendered again: uploads keep no full-resolution result)."""
        if upload.out is None or hints != upload.hints:
            upload.hints, upload.out = hints, self.colorizer.predict(upload.prepared, list(hints))
            upload.pixels = None
        if not rgb and upload.pixels is not None:
            return None
        result = self.colorizer.render(upload.prepared, upload.out)
        upload.pixels = result.pixels
        return result.rgb

    def _decode(self, data: bytes) -> tuple[np.ndarray, str]:
        """The upload as uint8 RGB within the megapixel budget, and a note when it was downscaled."""
        budget = int(self.max_megapixels * 1e6)
        try:
            with self.lock:
                rgb, (height, width) = read_rgb_within(data, budget, DECODE_FACTOR * budget)
        except UnreadableImage as e:
            if e.reason == "too many pixels":
                raise HTTPError(413, f"the photo is too large to read here ({e}); this server decodes up to "
                                f"{DECODE_FACTOR * self.max_megapixels:g} megapixels") from None
            raise HTTPError(400, f"that file is not an image we can read ({e.reason}); upload a JPEG, PNG or "
                            "WebP photo") from None
        if rgb.shape[:2] == (height, width):
            return rgb, ""
        return rgb, (f"the photo ({width}x{height}) is over this server's {self.max_megapixels:g} megapixels; "
                     f"it was downscaled to {rgb.shape[1]}x{rgb.shape[0]} (max_megapixels=...)")

    def upload(self, data: bytes) -> dict:
        from colorlab.palette import pixels_palette

        try:
            rgb, note = self._decode(data)
            with self.lock:  # one model call and one full-resolution image in the making at a time
                gray = data_url(np.asarray(Image.fromarray(rgb).convert("L")))
                upload = Upload(self.colorizer.prepare(rgb))
                del rgb
                result = data_url(self._result(upload, (), rgb=True))
        finally:
            release_memory()
        image_id = uuid.uuid4().hex
        with self.images_lock:
            self.images[image_id] = upload
            while len(self.images) > MAX_IMAGES:
                self.images.popitem(last=False)
        height, width = upload.prepared.shape
        return {"id": image_id, "width": width, "height": height, "gray": gray, "result": result,
                "palette": pixels_palette(upload.pixels), "note": note, "takes_hints": self.colorizer.takes_hints,
                "has_uncertainty": self.colorizer.model.predicts_distribution}

    def colorize(self, request: dict) -> dict:
        upload = self._get(request.get("id"))
        hints = self._hints(upload, request.get("hints"))
        if not isinstance(request.get("uncertainty", False), bool):
            raise HTTPError(400, f"uncertainty must be true or false. Got {request.get('uncertainty')!r}"[:300])
        try:
            with self.lock:  # also the full-resolution images: one at a time bounds the memory
                reply = {"result": data_url(self._result(upload, hints, rgb=True)), "uncertainty": None}
                if request.get("uncertainty"):
                    entropy = self.colorizer.uncertainty(upload.out, upload.prepared.shape)
                    reply["uncertainty"] = None if entropy is None else data_url(uncertainty_overlay(entropy))
        finally:
            release_memory()
        return reply

    def palette(self, request: dict) -> dict:
        from colorlab.palette import palette_at_point, pixels_palette

        upload = self._get(request.get("id"))
        hints = self._hints(upload, request.get("hints"))
        height, width = upload.prepared.shape
        try:  # the clicked point, checked like a hint (finite numbers inside the image)
            x, y = parse_point(request, width, height, "the clicked point")
        except HintsError as e:
            raise HTTPError(400, str(e)) from None
        with self.lock:
            self._result(upload, hints, rgb=False)
            out, pixels = upload.out, upload.pixels
        dist = self.colorizer.distribution_at(out, (height, width), x, y)
        return {"point": palette_at_point(*dist, upload.prepared.lightness(x, y)) if dist is not None else [],
                "image": pixels_palette(pixels)}


def make_app(service: ColorizeService, allowed_hosts=DEFAULT_HOSTS) -> AllowedHosts:
    """The Starlette app: the page and three JSON endpoints, behind the Host/Origin allow-list."""
    page = resources.files("colorlab").joinpath("static/app.html").read_bytes()

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    async def upload(request: Request) -> JSONResponse:
        body = await read_body(request, service.max_upload_bytes)
        return JSONResponse(await run_in_threadpool(service.upload, body))

    async def colorize(request: Request) -> JSONResponse:
        payload = await read_json(request, MAX_JSON_BYTES)
        return JSONResponse(await run_in_threadpool(service.colorize, payload))

    async def palette(request: Request) -> JSONResponse:
        payload = await read_json(request, MAX_JSON_BYTES)
        return JSONResponse(await run_in_threadpool(service.palette, payload))

    async def not_found(request: Request, exc) -> JSONResponse:
        return error_response(404, f"no page {request.url.path}")

    routes = [Route("/", index), Route("/index.html", index), Route("/api/upload", upload, methods=["POST"]),
              Route("/api/colorize", colorize, methods=["POST"]), Route("/api/palette", palette, methods=["POST"])]
    app = Starlette(routes=routes, exception_handlers={**json_error_handlers, 404: not_found})
    return AllowedHosts(app, allowed_hosts)


def serve(colorizer: PhotoColorizer, host: str = "127.0.0.1", port: int = 8765, max_upload_mb: float = 10.0,
          max_megapixels: float = 4.0, allowed_hosts=DEFAULT_HOSTS):
    """The app's Starlette application (see ``colorlab.web.serve`` / ``start`` to run it)."""
    return make_app(ColorizeService(colorizer, int(max_upload_mb * 2**20), max_megapixels), allowed_hosts)


def main(argv: list[str] | None = None) -> int:
    from colorlab.models import load_colorizer

    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        options = key_value_options(argv, OPTIONS, required=("ckpt",))
        numbers = {k: float(options.get(k, d)) for k, d in (("max_upload_mb", 10), ("max_megapixels", 4))}
        for key, value in numbers.items():
            if not (math.isfinite(value) and 0 < value <= 1000):
                raise ValueError(f"{key} must be a number in (0, 1000]. Got {options[key]}")
        port = int(options.get("port", 8765))
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535. Got {port}")
        host = options.get("host", "127.0.0.1")
        limit_heap()
        allowed = web.local_hosts(options.get("allowed_hosts", ""), host)
        model = load_colorizer(options["ckpt"], compute_device())
        colorizer = PhotoColorizer(model, int(options["size"]) if "size" in options else None)
        app = serve(colorizer, host, port, numbers["max_upload_mb"], numbers["max_megapixels"], allowed)
    except (FileNotFoundError, ValueError) as e:
        return error("app", e)
    hints = "hints on" if colorizer.takes_hints else "this checkpoint takes no hints"
    print(f"colorlab.app: http://{host}:{port}/ ({model.config['experiment']}, {hints}); Ctrl-C stops it")
    web.serve(app, host, port, limit_concurrency=MAX_REQUESTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
