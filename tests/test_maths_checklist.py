"""kornia's checklist for the shared maths where it applies: dtypes and devices against an independent
reference, float64 gradcheck of the Lab conversion, gradcheck of every formulation's loss, and the
docstring examples run as doctests."""

import doctest
import importlib
import pkgutil
import warnings

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

import colorlab
from colorlab.color import lab_to_rgb, normalize_lab, rgb_to_lab
from colorlab.config import compose
from colorlab.models import build_model, placeholder_prior

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_rgb_to_lab_in_every_dtype_and_device_matches_scikit_image(dtype, device):
    """Half precision is computed in fp32 (the cube root loses too much in 16 bits); float64 stays float64."""
    rgb = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    lab = rgb_to_lab(rgb)
    assert lab.dtype == (torch.float64 if dtype == torch.float64 else torch.float32) and lab.device.type == device
    expected = np.stack([rgb2lab(im.permute(1, 2, 0).double().cpu().numpy()) for im in rgb])
    np.testing.assert_allclose(lab.permute(0, 2, 3, 1).double().cpu().numpy(), expected,
                               atol=1e-6 if dtype == torch.float64 else 2e-3)


def test_lab_conversions_pass_gradcheck_in_float64():
    generator = torch.Generator().manual_seed(0)
    rgb = (torch.rand(1, 3, 3, 3, generator=generator, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(rgb_to_lab, (rgb,))
    lab = rgb_to_lab(rgb.detach() * 0.5 + 0.25).requires_grad_()  # inside the gamut: no clipping
    assert torch.autograd.gradcheck(lab_to_rgb, (lab,))


LOSS_EXPERIMENTS = ["regression_l2", "bins1d", "bins2d_313", "unet_bins", "eccv16_full", "hints_unet", "siggraph17"]


@pytest.mark.parametrize("experiment", LOSS_EXPERIMENTS)
def test_every_formulations_loss_passes_gradcheck(experiment):
    """The loss's gradient with respect to the network's output, against central differences. The
    formulations decode and take their losses in fp32 by design (as under autocast), so this runs in fp32
    with fp32's step and tolerances: a wrong gradient (a sign, a missing factor) is off by far more."""
    cfg = compose(experiment, ["data.size=16", "net.width=8"] if experiment != "siggraph17" else ["data.size=16"])
    model = build_model(cfg, placeholder_prior(cfg))
    generator = torch.Generator().manual_seed(0)
    rgb = torch.rand(2, 3, 16, 16, generator=generator) * 0.8 + 0.1
    l_norm, ab_norm = normalize_lab(rgb_to_lab(rgb))
    batch = {"l": l_norm, "ab": ab_norm}
    if model.hint_sampling is not None:
        batch["hint_ab"], batch["hint_mask"] = torch.zeros_like(ab_norm), torch.zeros_like(l_norm)
    with torch.no_grad():
        out = model.run_net(batch)
    outs = out if isinstance(out, tuple) else (out,)
    inputs = tuple(o.detach().clone().requires_grad_() for o in outs)

    def loss(*o):
        return model.loss(o if isinstance(out, tuple) else o[0], batch)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not a double precision")
        assert torch.autograd.gradcheck(loss, inputs, eps=1e-3, atol=1e-4, rtol=2e-2, fast_mode=True)


def modules_with_examples():
    names = [m.name for m in pkgutil.walk_packages(colorlab.__path__, "colorlab.") if not m.name.endswith("__main__")]
    finder = doctest.DocTestFinder()
    found = []
    for name in names:
        module = importlib.import_module(name)
        if any(test.examples for test in finder.find(module)):
            found.append(name)
    return found


def test_docstring_examples_run_as_doctests():
    modules = modules_with_examples()
    assert modules, "no docstring example found: the doctest check would pass vacuously"
    for name in modules:
        failed, attempted = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
        assert attempted > 0 and failed == 0, f"{name}: {failed} of {attempted} doctest examples failed"
