"""Mixed precision: Lab conversion, encodings and losses stay fp32; no NaN on black or saturated images."""

import pytest
import torch
from omegaconf import OmegaConf

from colorlab.config import compose
from colorlab.data import add_lab
from colorlab.data.prior import load_or_compute_prior
from colorlab.fit import train
from colorlab.models import build_model, channels_last

EXTREMES = [(0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("experiment", ["regression_l2", "bins1d", "eccv16_full", "unet_bins", "hints_unet"])
def test_autocast_on_black_and_saturated_images(experiment, dtype, tiny_overrides):
    cfg = compose(experiment, tiny_overrides)
    model = build_model(cfg, load_or_compute_prior(cfg)["counts"])
    rgb = torch.tensor(EXTREMES, dtype=torch.uint8).view(-1, 3, 1, 1).expand(-1, 3, 32, 32).contiguous()
    with torch.autocast("cpu", dtype=dtype):  # as Lightning's bf16-mixed / 16-mixed do around the step
        batch = add_lab({"rgb": rgb})
        if model.hint_sampling is not None:  # hints drawn from the black and saturated images too
            from colorlab.hints import sample_hints

            batch["hint_ab"], batch["hint_mask"] = sample_hints(batch["ab"], model.hint_sampling,
                                                                torch.Generator().manual_seed(0))
        out = model.run_net(batch)
        loss = model.loss(out, batch)
    assert batch["ab"].dtype == torch.float32 and loss.dtype == torch.float32
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(model.predict_ab(out, (32, 32))).all()


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training_run(precision, tiny_overrides):
    metrics = train(compose("unet_bins", tiny_overrides + ["trainer.max_epochs=1", f"trainer.precision={precision}"]))
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())


@pytest.mark.parametrize("experiment", ["regression_l2", "eccv16_full", "unet_bins", "fusion_bins112"])
def test_channels_last_is_a_layout_only(experiment, tiny_overrides):
    """speed.channels_last (the default: fastest measured on the CPU, docs/benchmarks.md) stores the
    network's conv weights NHWC, keeps checkpoints interchangeable and gives the same outputs up to float rounding."""
    cfg = compose(experiment, [*tiny_overrides, "speed.channels_last=false"])
    prior = load_or_compute_prior(cfg)["counts"]
    torch.manual_seed(0)
    nchw = build_model(cfg, prior).eval()
    nhwc = build_model(compose(experiment, [*tiny_overrides, "speed.channels_last=true"]), prior).eval()
    assert nhwc.state_dict().keys() == nchw.state_dict().keys()
    nhwc.load_state_dict(nchw.state_dict())
    convs = [m.weight for m in nhwc.net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs if w.shape[-1] > 1)
    batch = add_lab({"rgb": torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8,
                                          generator=torch.Generator().manual_seed(1))})
    if cfg.embed.enabled:
        batch["embedding"] = torch.randn(2, nchw.net.embed_dim)
    with torch.no_grad():
        torch.testing.assert_close(nhwc.run_net(batch), nchw.run_net(batch), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("accelerator", "precision", "net", "expected"), [
    ("cpu", "32-true", "eccv16", True),       # the CPU: NHWC for every net
    ("cpu", "bf16-mixed", "unet", True),
    ("gpu", "bf16-mixed", "eccv16", True),    # a GPU under mixed precision: NHWC
    ("gpu", "16-mixed", "siggraph17", True),
    ("gpu", "32-true", "eccv16", False),      # the fp32 NHWC trap of eccv16-like nets on a GPU
    ("cuda", "32", "siggraph17", False),
    ("gpu", "32-true", "unet", True),
])
def test_channels_last_auto_follows_the_device_and_precision(accelerator, precision, net, expected):
    trainer = OmegaConf.create({"accelerator": accelerator, "precision": precision})
    assert channels_last("auto", trainer, net) is expected
    assert channels_last(not expected, trainer, net) is (not expected)  # true/false force it


def test_channels_last_auto_is_the_default_and_bad_values_are_named(tiny_overrides):
    cfg = compose("eccv16_full", [*tiny_overrides, "net.width=8"])
    assert cfg.speed.channels_last == "auto"
    model = build_model(cfg, load_or_compute_prior(cfg)["counts"])  # on the CPU: NHWC
    assert model.net.model1[0].weight.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="speed.channels_last must be true, false or auto. Got 'maybe'"):
        channels_last("maybe", cfg.trainer, "unet")
