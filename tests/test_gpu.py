"""On a CUDA device: every test here is marked ``gpu`` and skipped without one (conftest). The CUDA results are
held against the same code on the CPU, so each can fail on a device that computes something else.

    python -m pytest -m gpu -q          # on a GPU machine; `bash benchmarks/gpu.sh --all` runs them after the figures
"""

import json
import os
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from colorlab.color import lab_to_uint8, uint8_to_lab
from colorlab.config import available_experiments, compose
from colorlab.fit import train
from colorlab.models import load_colorizer

pytestmark = pytest.mark.gpu
# CUDA Lab against the CPU: cuDNN/TF32 never touch this elementwise maths, so fp32 rounding is the only
# difference; 1e-3 Lab units is ~100x that and 1/100 of a JND (~1 unit)
LAB_TOLERANCE = 1e-3


def on_gpu(overrides: list[str]) -> list[str]:
    """tiny_overrides (a seconds-long CPU run) moved to ``trainer=gpu`` (one GPU, bf16-mixed)."""
    return [o for o in overrides if not o.startswith("trainer.accelerator=")] + ["trainer=gpu"]


@pytest.fixture(scope="module")
def random_rgb():
    return torch.randint(0, 256, (4, 3, 96, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


def test_cuda_lab_matches_the_cpu(random_rgb):
    lab_cpu = uint8_to_lab(random_rgb)
    lab_cuda = uint8_to_lab(random_rgb.cuda())
    assert lab_cuda.is_cuda
    assert (lab_cuda.cpu() - lab_cpu).abs().max() < LAB_TOLERANCE
    back = lab_to_uint8(lab_cuda).cpu()
    assert (back.int() - lab_to_uint8(lab_cpu).int()).abs().max() <= 1  # a rounding tie may flip one level
    assert (back.int() - random_rgb.int()).abs().max() <= 1


def test_bf16_autocast_keeps_lab_in_fp32(random_rgb):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        lab = uint8_to_lab(random_rgb.cuda())
    assert lab.dtype == torch.float32
    assert (lab.cpu() - uint8_to_lab(random_rgb)).abs().max() < LAB_TOLERANCE


@pytest.mark.parametrize("train", [False, True], ids=["validation", "training"])
def test_nvjpeg_decoding_gives_pils_crops_up_to_resampling(tmp_path, train):
    """data.decode=gpu on nvJPEG against PIL's full decode, the crops drawn alike (tests/test_jpeg_decode.py
    holds libjpeg on the CPU to mean < 0.5 levels). Stated for nvJPEG, whose IDCT and chroma upsampling are
    its own: mean < 1 level of 255, 99th percentile <= 4, and a 4 px shift is far outside it."""
    from tests.test_jpeg_decode import jpeg_folder, pil_and_device

    reference, decoded, _ = pil_and_device(jpeg_folder(tmp_path / "photos"), train, device="cuda")
    diff = (reference.float() - decoded.float()).abs()
    assert diff.mean() < 1.0, diff.mean()
    assert diff.flatten().quantile(0.99) <= 4
    assert (reference.float() - decoded.roll(4, dims=-1).float()).abs().mean() > 2


def test_nvjpeg_output_is_not_memory_that_queued_kernels_still_write(tmp_path):
    """torchvision allocates nvJPEG's outputs on the current stream but writes them on its own
    (pytorch/vision#9606). Blocks the size of the decoded photos are freed while fills queued behind a GPU
    sleep still write 255 into them. torchvision called plainly is handed those blocks (the control: which
    block an allocation gets is the caching allocator's choice, not timing); data/jpeg.py's decode must get
    none of them and give the bytes of an undisturbed decode."""
    from torchvision.io import decode_jpeg

    from colorlab.data.jpeg import _decode
    from tests.test_jpeg_decode import jpeg_folder

    device = torch.device("cuda", torch.cuda.current_device())
    paths = jpeg_folder(tmp_path / "photos")
    data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
    decode_jpeg(data, device="cuda")  # nvJPEG's decoder is made once, here, not inside the window
    reference = [t.clone() for t in _decode(data, device)]
    torch.cuda.synchronize()

    def provoke(decode):
        busy = [torch.empty(3 * h * w, dtype=torch.uint8, device="cuda")
                for h, w in [(375, 500), (500, 375), (333, 500), (50, 60)] for _ in range(8)]
        spans = [(b.data_ptr(), b.data_ptr() + b.numel()) for b in busy]
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU time queued before the fills
        for b in busy:
            b.fill_(255)
        del busy, b  # free for the current stream at once: its later kernels are ordered after the fills
        out = decode(data)
        hit = any(start <= image.data_ptr() < end for image in out for start, end in spans)
        torch.cuda.synchronize()
        return out, hit

    _, control_hit = provoke(lambda d: decode_jpeg(d, device="cuda"))
    if not control_hit:
        pytest.skip("torchvision's own call no longer gets the freed blocks here: nothing to guard against")
    out, hit = provoke(lambda d: _decode(d, device))
    assert not hit
    assert all(torch.equal(a, b) for a, b in zip(out, reference, strict=True))


@pytest.mark.parametrize("experiment", sorted(available_experiments()))
def test_five_bf16_mixed_steps_of_every_experiment(experiment, tiny_overrides, tmp_path):
    metrics = train(compose(experiment, [*on_gpu(tiny_overrides), "trainer.max_steps=5", "data.val_size=8",
                                         "data.batch_size=4"]))
    assert metrics and all(np.isfinite(v) for v in metrics.values()), metrics
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["global_step"] == 5


class CudaSyncsAreErrors(pl.Callback):
    """From the end of training step 2 (the first builds the optimizer's state, cudnn.benchmark tunes, the
    progress bar reads the loss once) to the end of the last step (then the run saves last.ckpt, which
    copies the weights to the host), anything that makes the host wait for the device raises: .item(),
    copies to and from the host from pageable memory, synchronize (tests/test_host_sync.py sees most
    causes on the CPU)."""

    def on_train_batch_end(self, trainer, *args):
        torch.cuda.set_sync_debug_mode("error" if 2 <= trainer.global_step < trainer.max_steps else "default")

    def on_train_end(self, trainer, *args):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("experiment", ["unet_bins", "hints_unet", "siggraph17", "video_propagate", "eccv16_full"])
def test_bf16_training_steps_never_wait_for_the_device(experiment, tiny_overrides):
    overrides = [*on_gpu(tiny_overrides), "trainer.max_steps=6", "data.train_size=64", "data.batch_size=4",
                 "trainer.limit_val_batches=0", "trainer.num_sanity_val_steps=0", "trainer.log_every_n_steps=50",
                 "trainer.enable_progress_bar=true", "checkpoint.every_n_steps=0"]
    try:
        train(compose(experiment, overrides), callbacks=[CudaSyncsAreErrors()])
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.fixture(scope="module")
def hints_model(tmp_path_factory):
    """A 3-step hints_unet trained on the GPU, loaded on the CPU (the reference) and on CUDA."""
    tmp = tmp_path_factory.mktemp("gpu_hints")
    train(compose("hints_unet", [f"run_dir={tmp / 'run'}", "logger=none", "data.num_workers=0", "data.size=32",
                                 "data.batch_size=8", "data.train_size=32", "data.val_size=8", "net.width=8",
                                 "trainer=gpu", "trainer.max_steps=3", "trainer.enable_progress_bar=false",
                                 f"prior.cache_dir={tmp / 'priors'}"]))
    path = tmp / "run" / "checkpoints" / "last.ckpt"
    return path, load_colorizer(path, "cpu"), load_colorizer(path, "cuda")


def scene(size: int = 96) -> np.ndarray:
    from colorlab.data.synthetic import SyntheticScenes

    return SyntheticScenes(length=4, size=size, seed=5, split="val")[1]["rgb"].permute(1, 2, 0).numpy()


def test_colorize_on_cuda_matches_the_cpu(hints_model):
    from colorlab.hints import Hint
    from colorlab.inference import PhotoColorizer

    _, cpu, cuda = hints_model
    rgb = scene()
    hints = [Hint(x=40, y=30, ab=(40.0, -30.0), size=8)]
    results = []
    for model in (cpu, cuda):
        colorizer = PhotoColorizer(model)
        assert colorizer.device.type == model.device.type
        prepared = colorizer.prepare(rgb)
        results.append(colorizer.render(prepared, colorizer.predict(prepared, hints)).rgb)
    difference = np.abs(results[0].astype(int) - results[1].astype(int))
    assert difference.mean() < 0.5 and difference.max() <= 3, (difference.mean(), difference.max())


def test_app_serves_from_cuda(hints_model):
    """The app command puts the model on CUDA when there is one; an upload round-trips through the API."""
    import base64
    import io

    from PIL import Image

    from colorlab.app import serve
    from colorlab.inference import PhotoColorizer
    from colorlab.web import start

    _, _, cuda = hints_model
    colorizer = PhotoColorizer(cuda)
    httpd, url = start(serve(colorizer))
    try:
        buffer = io.BytesIO()
        Image.fromarray(scene()).save(buffer, format="PNG")
        request = urllib.request.Request(url + "/api/upload", data=buffer.getvalue(), method="POST",
                                         headers={"Content-Type": "image/png"})
        with urllib.request.urlopen(request, timeout=60) as response:
            reply = json.loads(response.read())
    finally:
        httpd.should_exit = True
    with Image.open(io.BytesIO(base64.b64decode(reply["result"].split(",", 1)[1]))) as image:
        served = np.asarray(image.convert("RGB"))
    prepared = colorizer.prepare(scene())
    assert np.abs(served.astype(int) - colorizer.render(prepared, colorizer.predict(prepared)).rgb).max() <= 1


def test_video_propagation_on_cuda_matches_the_cpu(hints_model):
    from colorlab.data.video_synthetic import SyntheticVideo
    from colorlab.video.clips import propagate_clip

    _, cpu, cuda = hints_model
    clip = SyntheticVideo(size=32, length=1, seed=0, split="val", frames=6)[0]
    rgb = clip["rgb"]
    flows = list(zip(clip["back_flow"], clip["back_valid"], strict=True))
    key = uint8_to_lab(rgb[:1])[0, 1:] / 110.0
    out_cpu, ab_cpu = propagate_clip(cpu, rgb, key, flows=flows)
    out_cuda, ab_cuda = propagate_clip(cuda, rgb, key, flows=flows)
    assert not ab_cuda.is_cuda and ab_cuda.shape == ab_cpu.shape == (6, 2, 32, 32)
    assert (ab_cuda - ab_cpu).abs().mean() < 0.5  # Lab units; the six frames carry one another's rounding


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DDP over NCCL needs two GPUs")
def test_ddp_over_nccl_on_two_gpus(tmp_path):
    run = subprocess.run([sys.executable, "-m", "colorlab.fit", "experiment=unet_bins", "trainer=ddp",
                          "trainer.devices=2", "trainer.max_steps=5", "logger=none", "data.num_workers=2",
                          "data.train_size=256", "data.val_size=16", "trainer.enable_progress_bar=false",
                          f"run_dir={tmp_path / 'run'}", f"prior.cache_dir={tmp_path / 'priors'}"],
                         env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "nccl" in (run.stdout + run.stderr).lower()
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["global_step"] == 5 and np.isfinite(metrics["val/ab_error"])
