"""The interactive page: its HTTP API, and the page itself driven in headless Chromium."""

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from colorlab.app import main as app_main
from colorlab.app import serve
from colorlab.color import uint8_to_lab
from colorlab.hints import color_to_ab
from colorlab.inference import PhotoColorizer
from colorlab.models import load_colorizer
from colorlab.web import start
from tests.browser import chromium_path, launch

LIMIT_MB = 0.25
MEGAPIXELS = 0.02  # 141x141: a 96x96 scene fits, a 300x200 photo is downscaled


@pytest.fixture(scope="module")
def server(hints_checkpoint):
    colorizer = PhotoColorizer(load_colorizer(hints_checkpoint))
    httpd, url = start(serve(colorizer, max_upload_mb=LIMIT_MB, max_megapixels=MEGAPIXELS))
    yield url
    httpd.should_exit = True


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A synthetic scene at 96 px with its bimodal diamond: (path, rgb, (x, y) of the diamond's centre)."""
    from colorlab.data.synthetic import SyntheticScenes

    item = SyntheticScenes(length=8, size=96, seed=5, split="val")[3]
    rgb = item["rgb"].permute(1, 2, 0).numpy()
    ys, xs = np.nonzero(item["bimodal"][0].numpy())
    path = tmp_path_factory.mktemp("photo") / "scene.png"
    Image.fromarray(rgb).save(path)
    return path, rgb, (int(xs.mean()), int(ys.mean()))


def post(url, body: bytes, content_type="application/json"):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def decode(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))) as image:
        return np.asarray(image.convert("RGB"))


def ab_at(rgb: np.ndarray, x: int, y: int) -> torch.Tensor:
    return uint8_to_lab(torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None])[0, 1:, y, x]


def test_api_colourises_uploads_and_hints(server, photo):
    path, rgb, (x, y) = photo
    status, upload = post(server + "/api/upload", path.read_bytes(), "application/octet-stream")
    assert status == 200 and upload["takes_hints"] and upload["has_uncertainty"]
    assert (upload["width"], upload["height"]) == (96, 96)
    automatic = decode(upload["result"])
    assert automatic.shape == rgb.shape
    target = [48.0, -40.0] if ab_at(automatic, x, y)[0] < 0 else [-48.0, 40.0]  # the other mode
    hints = [{"x": x, "y": y, "ab": target, "size": 12}]
    status, hinted = post(server + "/api/colorize", json.dumps({"id": upload["id"], "hints": hints,
                                                                "uncertainty": True}).encode())
    assert status == 200
    after = ab_at(decode(hinted["result"]), x, y)
    assert (after - torch.tensor(target)).norm() < (ab_at(automatic, x, y) - torch.tensor(target)).norm()
    overlay = decode(hinted["uncertainty"])
    assert overlay.shape == rgb.shape
    status, palette = post(server + "/api/palette", json.dumps({"id": upload["id"], "x": x, "y": y}).encode())
    assert status == 200 and 1 <= len(palette["point"]) <= 5 and 1 <= len(palette["image"]) <= 5


def test_api_refuses_bad_uploads_and_hints_with_a_message(server, photo):
    status, reply = post(server + "/api/upload", b"certainly not a PNG", "application/octet-stream")
    assert status == 400 and "not an image" in reply["error"]
    status, reply = post(server + "/api/upload", b"\x89PNG" + bytes(int(LIMIT_MB * 2**20)), "image/png")
    assert status == 413 and f"accepts up to {LIMIT_MB:g} MB" in reply["error"]
    status, upload = post(server + "/api/upload", photo[0].read_bytes(), "image/png")
    request = {"id": upload["id"], "hints": [{"x": 96, "y": 5, "color": "#d02020"}]}
    status, reply = post(server + "/api/colorize", json.dumps(request).encode())
    assert status == 400 and "outside the image" in reply["error"]
    status, reply = post(server + "/api/colorize", json.dumps({"id": "nope", "hints": []}).encode())
    assert status == 400 and "unknown image id" in reply["error"]
    with urllib.request.urlopen(server + "/", timeout=30) as response:
        assert b"user-guided colourization" in response.read()


def test_app_command_errors(tmp_path, capsys):
    assert app_main([f"ckpt={tmp_path / 'missing.ckpt'}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert app_main(["ckpt=x", "prot=1"]) == 2
    assert "unknown ['prot']" in capsys.readouterr().err


def test_page_in_headless_chromium(server, photo, tmp_path):
    """Upload, click a hint, the result changes near the hint towards the hint colour; undo; a bad upload."""
    chromium_path()  # or skip (fail in .ci/run)
    from playwright.sync_api import sync_playwright

    path, rgb, (x, y) = photo
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page()
        page.goto(server)
        page.set_input_files("#file", str(path))
        page.wait_for_function("document.getElementById('result').dataset.version === '1'", timeout=60_000)
        automatic = decode(page.get_attribute("#result", "src"))
        before = ab_at(automatic, x, y)
        hint = "#d040c0" if before[0] < 0 else "#30a030"  # magenta or green: the mode it did not pick
        target = torch.tensor(color_to_ab(hint))
        page.fill("#color", hint)
        box = page.locator("#source").bounding_box()
        page.click("#source", position={"x": (x + 0.5) * box["width"] / 96, "y": (y + 0.5) * box["height"] / 96})
        page.wait_for_function("document.getElementById('result').dataset.version === '2'", timeout=60_000)
        hinted = decode(page.get_attribute("#result", "src"))
        assert page.inner_text("#hint-count") == "1 hint"
        near = [ab_at(hinted, x + dx, y + dy) for dx in (-2, 0, 2) for dy in (-2, 0, 2)]
        assert all((a - target).norm() < (before - target).norm() for a in near)
        assert page.locator("#point-palette button").count() >= 1
        assert page.get_attribute("#download", "href").startswith("data:image/png;base64,")
        page.click("#undo")
        page.wait_for_function("document.getElementById('result').dataset.version === '3'", timeout=60_000)
        assert np.array_equal(decode(page.get_attribute("#result", "src")), automatic)
        bad = tmp_path / "broken.png"
        bad.write_bytes(b"not an image at all")
        page.set_input_files("#file", str(bad))
        page.wait_for_function("document.getElementById('message').textContent.includes('not an image')",
                               timeout=30_000)
        browser.close()


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """The app over an untrained hints_unet (only the refusals matter here): its base URL."""
    from colorlab.config import compose
    from colorlab.models import build_model, placeholder_prior

    cfg = compose("hints_unet", ["data.size=32", "net.width=8"])
    model = build_model(cfg, placeholder_prior(cfg)).eval()
    httpd, url = start(serve(PhotoColorizer(model), max_upload_mb=LIMIT_MB, max_megapixels=MEGAPIXELS))
    yield url
    httpd.should_exit = True


def test_api_downscales_over_budget_and_refuses_hostile_json(untrained):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8)).save(buffer, "PNG")
    status, upload = post(untrained + "/api/upload", buffer.getvalue(), "image/png")
    assert status == 200 and (upload["width"], upload["height"]) == (173, 115)
    assert "downscaled to 173x115" in upload["note"]
    image_id = upload["id"]
    cases = [({"id": image_id, "hints": [{"x": 5, "y": 5, "ab": [True, False]}]}, "hint 0: ab must be [a, b]"),
             ({"id": [1]}, "unknown image id"),
             ({"id": image_id, "hints": [{"x": 5, "y": 5, "ab": [1, 1], "size": 1e300}]}, "hint 0: size must be"),
             ({"id": image_id, "hints": [{"x": 5, "y": 5, "ab": [1, 1]}] * 257}, "at most 256"),
             ({"id": image_id, "uncertainty": "yes"}, "uncertainty must be true or false")]
    for request, words in cases:
        status, reply = post(untrained + "/api/colorize", json.dumps(request).encode())
        assert status == 400 and words in reply["error"], request
    status, reply = post(untrained + "/api/palette", json.dumps({"id": image_id, "x": 1000, "y": 3}).encode())
    assert status == 400 and reply["error"].startswith("the clicked point: (1000, 3) is outside the image")
    for body, code, words in [(b"[1,2]", 400, "must be a JSON object"), (b"null", 400, "must be a JSON object"),
                              (b"\xff{}", 400, "not UTF-8"), (b"[" * 1000, 400, "nested 1000 deep"),
                              (b'{"id": "' + b"x" * 300_000 + b'"}', 413, "accepts up to")]:
        status, reply = post(untrained + "/api/colorize", body)
        assert status == code and words in reply["error"], body[:10]
    status, reply = post(untrained + "/api/colorize", b"{}", "text/plain")
    assert status == 415 and "application/json" in reply["error"]


def reference_rgb(model, size, rgb, hints):
    """What colorize computed before uploads were kept as uint8: Lab kept in float32 at full resolution,
    its L recombined with the upsampled ab (transcribed as the reference)."""
    import torch.nn.functional as F

    from colorlab.color import AB_NORM, lab_to_uint8, normalize_lab
    from colorlab.hints import encode_hints

    with torch.no_grad():
        lab = uint8_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None])
        l_small = F.interpolate(normalize_lab(lab)[0], size=(size, size), mode="bilinear", align_corners=False,
                                antialias=True)
        hint_ab, hint_mask = encode_hints(hints, tuple(lab.shape[-2:]), (size, size), 3) if hints else (None, None)
        ab = model.decode(model(l_small, None, hint_ab, hint_mask))
        ab = F.interpolate(ab.float(), size=lab.shape[-2:], mode="bilinear", align_corners=False) * AB_NORM
        return lab_to_uint8(torch.cat([lab[:, :1], ab], dim=1))[0].permute(1, 2, 0).numpy()


def test_kept_uploads_are_compact_and_results_bit_identical():
    """An upload keeps 3 bytes per pixel plus working-size tensors, and its results are the float32 path's."""
    from colorlab.app import ColorizeService
    from colorlab.config import compose
    from colorlab.hints import Hint
    from colorlab.models import build_model, placeholder_prior

    torch.manual_seed(0)
    cfg = compose("hints_unet", ["data.size=32", "net.width=8"])
    model = build_model(cfg, placeholder_prior(cfg)).eval()
    colorizer = PhotoColorizer(model)
    colorizer.band_pixels = 257 * 40 + 3  # bands of 40 rows: the last one shorter
    service = ColorizeService(colorizer, 2**20, max_megapixels=1.0)
    rgb = np.random.default_rng(3).integers(0, 256, (301, 257, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    reply = service.upload(buffer.getvalue())
    assert np.array_equal(decode(reply["result"]), reference_rgb(model, 32, rgb, []))
    points = [{"x": 10, "y": 20, "ab": [40, -30], "size": 30}, {"x": 200, "y": 250, "color": "#20c040"}]
    reply = service.colorize({"id": reply["id"], "hints": points})
    hints = [Hint(10, 20, (40.0, -30.0), 30.0), Hint(200, 250, color_to_ab("#20c040"))]
    assert np.array_equal(decode(reply["result"]), reference_rgb(model, 32, rgb, hints))
    (upload,) = service.images.values()
    full = [t for t in vars(upload.prepared).values() if torch.is_tensor(t) and t.numel() >= rgb.size]
    assert [(t.dtype, t.numel()) for t in full] == [(torch.uint8, rgb.size)]  # the photo, nothing else
    assert upload.out.shape[-2:] == (32, 32) and upload.pixels.shape == (20000, 3)


def test_uncertainty_overlay_in_bands_is_the_dense_map():
    """The overlay computed on bands of rows equals the whole-image float version it replaced."""
    import torch

    from colorlab.app import uncertainty_overlay

    def dense(entropy):
        e = entropy.float()
        scale = (e - e.min()) / (e.max() - e.min()).clamp_min(1e-6)
        rgba = torch.stack([torch.full_like(scale, 255), 60 * (1 - scale), torch.zeros_like(scale), 150 * scale], -1)
        return rgba.round().to(torch.uint8).numpy()

    generator = torch.Generator().manual_seed(0)
    for shape in [(37, 53), (300, 7), (1, 1)]:
        entropy = torch.rand(shape, generator=generator) * 5
        for band_pixels in (1, 100, 1 << 18):  # one row at a time, a few rows, the whole image
            assert (uncertainty_overlay(entropy, band_pixels) == dense(entropy)).all()
    flat = torch.full((4, 4), 2.0)  # no spread: all transparent
    assert (uncertainty_overlay(flat, 3) == dense(flat)).all()
