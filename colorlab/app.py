"""The interactive page for user-guided colourization:
``python -m colorlab.app ckpt=PATH [port=8765] [host=127.0.0.1] [max_upload_mb=10] [size=N]``.

Upload a photo and see the automatic colourization; click a point to add a hint (colour picker,
or one of the colours suggested for that point); the result updates after each hint; undo, clear,
download. An optional overlay shows the model's per-pixel uncertainty (entropy of its ab
distribution), where a hint helps most. Serves on 127.0.0.1 unless told otherwise; uploads over
``max_upload_mb`` or that do not decode as an image are refused with a message on the page.

JSON API (what the page uses): POST /api/upload (the file's bytes) -> {id, width, height, gray,
result, palette}; POST /api/colorize {id, hints, uncertainty} -> {result, uncertainty};
POST /api/palette {id, x, y, hints} -> {point, image}. Images are PNG data URLs.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources

import numpy as np
import torch
from PIL import Image

from colorlab.colorize import PhotoColorizer, Prepared, Result
from colorlab.config import key_value_options, usage_exit_code
from colorlab.hints import Hint, HintsError, parse_hints
from colorlab.io import UnreadableImage, read_rgb_bytes

OPTIONS = ("ckpt", "port", "host", "max_upload_mb", "size")
MAX_IMAGES = 16  # uploads kept in memory (least recently used dropped)


def data_url(rgb: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def uncertainty_overlay(entropy: torch.Tensor) -> np.ndarray:
    """Entropy (H, W) in nats -> uint8 RGBA heat map (H, W, 4): transparent where certain, red where not."""
    e = entropy.float().cpu()
    scale = (e - e.min()) / (e.max() - e.min()).clamp_min(1e-6)  # 0..1 over this image
    rgba = torch.stack([torch.full_like(scale, 255), 60 * (1 - scale), torch.zeros_like(scale), 150 * scale], -1)
    return rgba.round().to(torch.uint8).numpy()


@dataclass
class Upload:
    """A photo kept between requests, with its latest colourization (a click asks for the palette at
    the point under the current hints, then for the result with the new hint: the first reuses it)."""

    prepared: Prepared
    hints: tuple[Hint, ...] = ()
    result: Result | None = None


class ColorizeService:
    """Everything the page does, independent of HTTP (the handler only parses and serialises)."""

    def __init__(self, colorizer: PhotoColorizer, max_upload_bytes: int):
        self.colorizer, self.max_upload_bytes = colorizer, max_upload_bytes
        self.images: OrderedDict[str, Upload] = OrderedDict()
        self.lock = threading.Lock()  # one forward pass at a time: the model is shared

    def _get(self, image_id) -> Upload:
        if image_id not in self.images:
            raise KeyError("unknown image id: upload the photo again (the server keeps the latest "
                           f"{MAX_IMAGES} uploads)")
        self.images.move_to_end(image_id)
        return self.images[image_id]

    def _hints(self, upload: Upload, points) -> tuple[Hint, ...]:
        height, width = upload.prepared.lab.shape[-2:]
        hints = parse_hints(points or [], width, height)
        if hints and not self.colorizer.takes_hints:
            raise HintsError("this checkpoint was trained without hints; start the app with a hints_unet checkpoint")
        return tuple(hints)

    def _result(self, upload: Upload, hints: tuple[Hint, ...]) -> Result:
        """The colourization under these hints; the network runs only when they changed. Holds the lock."""
        if upload.result is None or hints != upload.hints:
            upload.hints, upload.result = hints, self.colorizer.run(upload.prepared, list(hints))
        return upload.result

    def upload(self, data: bytes) -> dict:
        rgb = read_rgb_bytes(data)
        with self.lock:  # prepare runs the global embedder of fusion models: one model call at a time
            upload = Upload(self.colorizer.prepare(rgb))
            result = self._result(upload, ())
        image_id = uuid.uuid4().hex
        gray = np.repeat(np.asarray(Image.fromarray(rgb).convert("L"))[..., None], 3, axis=2)
        self.images[image_id] = upload
        while len(self.images) > MAX_IMAGES:
            self.images.popitem(last=False)
        from colorlab.palette import image_palette

        return {"id": image_id, "width": rgb.shape[1], "height": rgb.shape[0], "gray": data_url(gray),
                "result": data_url(result.rgb), "palette": image_palette(result.lab[0]),
                "takes_hints": self.colorizer.takes_hints,
                "has_uncertainty": self.colorizer.model.predicts_distribution}

    def colorize(self, request: dict) -> dict:
        upload = self._get(request.get("id"))
        hints = self._hints(upload, request.get("hints"))
        with self.lock:
            result = self._result(upload, hints)
            entropy = self.colorizer.uncertainty(result) if request.get("uncertainty") else None
        return {"result": data_url(result.rgb),
                "uncertainty": None if entropy is None else data_url(uncertainty_overlay(entropy))}

    def palette(self, request: dict) -> dict:
        from colorlab.palette import image_palette, palette_at_point

        upload = self._get(request.get("id"))
        hints = self._hints(upload, request.get("hints"))
        lab = upload.prepared.lab
        # the clicked point, checked like a hint (inside the image, numbers)
        [point] = parse_hints([{"x": request.get("x"), "y": request.get("y"), "ab": [0, 0]}],
                              lab.shape[-1], lab.shape[-2])
        with self.lock:
            result = self._result(upload, hints)
        dist = self.colorizer.distribution_at(result, point.x, point.y)
        lightness = float(lab[0, 0, int(point.y), int(point.x)])
        return {"point": palette_at_point(*dist, lightness) if dist is not None else [],
                "image": image_palette(result.lab[0])}


def make_handler(service: ColorizeService):
    page = resources.files("colorlab").joinpath("static/app.html").read_bytes()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # quiet: one line per request is noise here
            pass

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: dict) -> None:
            self._send(status, json.dumps(payload).encode())

        def do_GET(self):
            if self.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no page {self.path}"})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if self.path == "/api/upload" and length > service.max_upload_bytes:
                self.close_connection = True  # the body is not read: do not reuse the connection
                limit = service.max_upload_bytes / 2**20
                return self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {
                    "error": f"the file is {length / 2**20:.1f} MB; this server accepts up to {limit:g} MB "
                             "(max_upload_mb=...)"})
            body = self.rfile.read(length)
            try:
                if self.path == "/api/upload":
                    return self._json(HTTPStatus.OK, service.upload(body))
                request = json.loads(body or b"{}")
                if self.path == "/api/colorize":
                    return self._json(HTTPStatus.OK, service.colorize(request))
                if self.path == "/api/palette":
                    return self._json(HTTPStatus.OK, service.palette(request))
                return self._json(HTTPStatus.NOT_FOUND, {"error": f"no endpoint {self.path}"})
            except UnreadableImage as e:
                self._json(HTTPStatus.BAD_REQUEST, {"error": f"that file is not an image we can read ({e.reason}); "
                                                    "upload a JPEG, PNG or WebP photo"})
            except (HintsError, KeyError, json.JSONDecodeError) as e:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(e).strip("'\"")})

    return Handler


def serve(colorizer: PhotoColorizer, host: str = "127.0.0.1", port: int = 8765,
          max_upload_mb: float = 10.0) -> ThreadingHTTPServer:
    """A server bound to (host, port) (port 0: any free port); call serve_forever() on it."""
    service = ColorizeService(colorizer, int(max_upload_mb * 2**20))
    return ThreadingHTTPServer((host, port), make_handler(service))


def main(argv: list[str] | None = None) -> int:
    from colorlab.models import load_colorizer

    argv = sys.argv[1:] if argv is None else argv
    if (code := usage_exit_code(argv, __doc__)) is not None:
        return code
    try:
        options = key_value_options(argv, OPTIONS, required=("ckpt",))
        model = load_colorizer(options["ckpt"], "cuda" if torch.cuda.is_available() else "cpu")
        colorizer = PhotoColorizer(model, int(options["size"]) if "size" in options else None)
        server = serve(colorizer, options.get("host", "127.0.0.1"), int(options.get("port", 8765)),
                       float(options.get("max_upload_mb", 10)))
    except (FileNotFoundError, ValueError, OSError) as e:  # OSError: the port is taken
        print(f"colorlab.app: error: {e}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    hints = "hints on" if colorizer.takes_hints else "this checkpoint takes no hints"
    print(f"colorlab.app: http://{host}:{port}/ ({model.config['experiment']}, {hints}); Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
