"""Zhang's released generators into colorlab: exact outputs against an independent transcription
(tests/zhang_reference.py) with random weights, through a checkpoint file and colorize, and clear errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from colorlab.bins import gamut_centers
from colorlab.color import lab_to_uint8, uint8_to_lab
from colorlab.import_weights import main
from colorlab.models.released import import_released, save_checkpoint
from tests.zhang_reference import ECCVReference, SiggraphReference, randomize

SIZE = 32  # network input side: fast, and a multiple of 8


def assert_same_ab(model, run, ab_release):
    """Within 1e-4 Lab units with the network in NCHW memory format (the release's arithmetic), and within
    1e-4 of the network's own scale (normalised ab, ab / 110) in the channels_last format that colorlab
    runs by default, whose convolutions sum in another order."""
    assert ab_release.abs().max() > 5  # the comparison is not between two near-zero maps
    for memory_format, tolerance in ((torch.contiguous_format, 1e-4), (torch.channels_last, 1e-4 * 110)):
        model.net.to(memory_format=memory_format)
        assert (run(model) - ab_release).abs().max() < tolerance


@pytest.fixture(scope="module")
def eccv_release(tmp_path_factory):
    """A random-weight ECCV16 in the release's layout, its 313 -> 2 weights the bin centres in a shuffled
    order (the import must recover it), and its state dict saved as a .pth."""
    reference = randomize(ECCVReference(), seed=0)
    order = torch.randperm(313, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference.model_out.weight.copy_((gamut_centers()[order] / 110.0).T[:, :, None, None])
    path = tmp_path_factory.mktemp("released") / "colorization_release_v2.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


@pytest.fixture(scope="module")
def siggraph_release(tmp_path_factory):
    reference = randomize(SiggraphReference(), seed=2)
    path = tmp_path_factory.mktemp("released") / "siggraph17.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def random_l(seed: int, size: int = SIZE) -> torch.Tensor:
    """L (2, 1, size, size) in [0, 100]: smooth structure plus noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(2, 1, 4, 4, generator=generator)
    fine = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (100 * (0.8 * fine + 0.2 * torch.rand(2, 1, size, size, generator=generator))).clamp(0, 100)


@torch.no_grad()
def test_eccv16_import_gives_the_release_ab_with_mean_decoding_and_x4_bilinear(eccv_release):
    reference, path = eccv_release
    model = import_released("eccv16", path)
    assert model.temperature == 1.0 and model.config["net"]["width"] == 64
    l = random_l(0)
    ab_release = reference(l)
    assert_same_ab(model, lambda m: m.predict_ab(m((l - 50) / 100), l.shape[-2:]) * 110, ab_release)


@pytest.mark.parametrize("mask_cent", [0.0, 0.5])
@torch.no_grad()
def test_siggraph17_import_gives_the_release_ab_with_hints(siggraph_release, mask_cent):
    reference, path = siggraph_release
    reference.mask_cent = mask_cent
    model = import_released("siggraph17", path, mask_offset=mask_cent)
    generator = torch.Generator().manual_seed(3)
    l = random_l(1)
    mask = (torch.rand(2, 1, SIZE, SIZE, generator=generator) < 0.1).float()
    hint_ab = (torch.rand(2, 2, SIZE, SIZE, generator=generator) * 160 - 80) * mask
    ab_release = reference(l, hint_ab, mask)
    assert_same_ab(model, lambda m: m.predict_ab(m((l - 50) / 100, None, hint_ab / 110, mask), l.shape[-2:]) * 110,
                   ab_release)
    zeros = torch.zeros_like(mask)  # no hints: the release's default inputs
    assert_same_ab(model, lambda m: m.predict_ab(m((l - 50) / 100), l.shape[-2:]) * 110,
                   reference(l, zeros.expand(-1, 2, -1, -1), zeros))


def test_import_to_checkpoint_to_colorize_png_matches_the_release(eccv_release, tmp_path):
    """import_weights -> checkpoint file -> colorize on a PNG equals the release's forward on the same L,
    its ab upsampled to the photo and joined with the photo's L; within 2 Lab units (8-bit rounding of
    the written PNG and of the reference)."""
    from colorlab.colorize import colorize
    from colorlab.inference import PhotoColorizer

    reference, path = eccv_release
    ckpt = tmp_path / "eccv16.ckpt"
    assert main(["eccv16", str(path), "--out", str(ckpt)]) == 0
    rng = np.random.default_rng(0)
    rgb = np.kron(rng.integers(0, 256, (6, 5, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # (48, 40, 3)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    written, _ = colorize(ckpt, tmp_path / "photo.png", tmp_path / "out", size=SIZE)
    got = uint8_to_lab(torch.from_numpy(np.array(Image.open(written[0]))).permute(2, 0, 1)[None])

    prepared = PhotoColorizer(import_released("eccv16", path), SIZE).prepare(rgb)
    with torch.no_grad():
        ab = reference(prepared.l_small * 100 + 50)  # (1, 2, 32, 32) Lab units
    lab = uint8_to_lab(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    lab[:, 1:] = F.interpolate(ab, size=rgb.shape[:2], mode="bilinear", align_corners=False)
    expected = uint8_to_lab(lab_to_uint8(lab))
    assert ab.abs().max() > 5
    assert (got - expected).norm(dim=1).max() < 2.0


@pytest.mark.slow
def test_the_imported_checkpoint_evaluates_like_any_other(eccv_release, tmp_path, capsys):
    from colorlab.evaluate import main as evaluate_main

    _, path = eccv_release
    ckpt = save_checkpoint(import_released("eccv16", path), tmp_path / "e.ckpt", path)
    code = evaluate_main([f"ckpt={ckpt}", f"out={tmp_path / 'eval'}", "data.size=32", "data.val_size=8",
                          "data.num_workers=0", "evaluate.temperatures=[0.38]", "evaluate.fid=false",
                          "evaluate.lpips=false"])
    assert code == 0
    assert "T=1" in (tmp_path / "eval" / "metrics.md").read_text()  # the release's mean, beside T=0.38


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("colorlab.import_weights: error:")
    return err


def test_a_file_of_the_other_model_is_named(eccv_release, siggraph_release, capsys):
    assert main(["eccv16", str(siggraph_release[1])]) == 2
    assert "holds the siggraph17 generator" in one_line_error(capsys)
    assert main(["siggraph17", str(eccv_release[1])]) == 2
    assert "holds the eccv16 generator" in one_line_error(capsys)


def test_missing_and_unexpected_keys_are_named(eccv_release, tmp_path, capsys):
    state = eccv_release[0].state_dict()
    state.pop("model3.2.weight")
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "edited.pth")
    assert main(["eccv16", str(tmp_path / "edited.pth")]) == 2
    err = one_line_error(capsys)
    assert "missing model3.2.weight" in err and "unexpected extra.weight" in err
    state = eccv_release[0].state_dict()
    state["model1.0.weight"] = torch.zeros(32, 1, 3, 3)  # another width
    torch.save(state, tmp_path / "narrow.pth")
    assert main(["eccv16", str(tmp_path / "narrow.pth")]) == 2
    assert "model1.0.weight has shape (32, 1, 3, 3)" in one_line_error(capsys)


def test_truncated_file_and_pickled_code_are_refused(eccv_release, tmp_path, capsys):
    data = eccv_release[1].read_bytes()
    (tmp_path / "truncated.pth").write_bytes(data[: len(data) // 2])
    assert main(["eccv16", str(tmp_path / "truncated.pth")]) == 2
    assert "truncated" in one_line_error(capsys)
    torch.save(eccv_release[0], tmp_path / "whole_model.pth")  # the module itself: unpickling runs code
    assert main(["eccv16", str(tmp_path / "whole_model.pth")]) == 2
    assert "pickled code" in one_line_error(capsys)
