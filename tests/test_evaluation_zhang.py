"""The papers' evaluation layouts (colorlab/evaluation/zhang.py): AuC against a hand-computed case, the
PSNR-against-points curve with a predictor that copies its hints, and the command's hook and errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from colorlab.bins import gamut_centers
from colorlab.color import uint8_to_lab
from colorlab.evaluate import main as evaluate_main
from colorlab.evaluation.zhang import ZHANG2017_PSNR, sweep_points, zhang16_auc, zhang17_sweep
from colorlab.hints import HintSampling
from colorlab.models.released import import_released, save_checkpoint
from tests.corpus import colour_photo
from tests.zhang_reference import ECCVReference, SiggraphReference, randomize

COLOURS = {"a.png": ((200, 60, 40), (30, 40)), "b.png": ((150, 150, 170), (20, 20))}  # RGB, (H, W)


def gray(l, hint_ab, hint_mask):
    return torch.zeros(l.shape[0], 2, *l.shape[-2:])


def copy_hints(l, hint_ab, hint_mask):
    return hint_ab * hint_mask


def test_sweep_points_are_test_sweeps_up_to_50():
    assert sweep_points() == [0, 1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20, 25, 32, 40, 50] == list(ZHANG2017_PSNR)


def test_zhang16_auc_equals_a_hand_computed_case_on_whole_images(tmp_path):
    """Two solid images of different sizes, predicted gray: every pixel's error is its image's chroma; the
    curve counts the pixels of the whole images at their own size, rebalanced by 1 / prior of their bin."""
    errors, pixels, bins = [], [], []
    for name, (rgb, (h, w)) in COLOURS.items():
        Image.fromarray(np.full((h, w, 3), rgb, np.uint8)).save(tmp_path / name)
        ab = uint8_to_lab(torch.tensor(rgb, dtype=torch.uint8)[None, :, None, None])[0, 1:, 0, 0].double()
        errors.append(float(ab.norm()))
        pixels.append(h * w)
        bins.append(int((gamut_centers().double() - ab).norm(dim=1).argmin()))
    prior = torch.zeros(313, dtype=torch.float64)
    prior[bins[0]], prior[bins[1]] = 0.99, 0.01
    weights = [pixels[0] / 0.99, pixels[1] / 0.01]  # pixels x 1 / p
    thresholds = range(151)
    raw = sum(sum(n for n, d in zip(pixels, errors, strict=True) if d <= t) / sum(pixels) for t in thresholds) / 151
    rebalanced = sum(sum(w for w, d in zip(weights, errors, strict=True) if d <= t) / sum(weights)
                     for t in thresholds) / 151
    assert 0.2 < raw < 0.9 and abs(raw - rebalanced) > 0.01  # the case tells the two apart

    measured, skipped = zhang16_auc(gray, sorted(tmp_path.glob("*.png")), side=16, prior=prior)
    assert not skipped and measured["images"] == 2
    assert measured["auc"] == pytest.approx(raw, abs=1e-6)
    assert measured["auc_rebalanced"] == pytest.approx(rebalanced, abs=1e-6)
    assert "auc_rebalanced" not in zhang16_auc(gray, sorted(tmp_path.glob("*.png")), 16, None)[0]


def test_zhang17_curve_rises_with_points_when_hints_give_the_truth(tmp_path):
    for i in range(6):
        Image.fromarray(colour_photo(i, size=(48, 40))).save(tmp_path / f"{i}.png")
    points = [0, 1, 2, 5, 10, 20, 50]
    curve, _ = zhang17_sweep(copy_hints, sorted(tmp_path.glob("*.png")), 32, points, HintSampling())
    psnrs = [curve[n] for n in points]
    assert all(later > earlier for earlier, later in zip(psnrs, psnrs[1:], strict=False))
    assert psnrs[-1] > psnrs[0] + 2  # 50 patches of 6x6 px cover about half of 32x32
    again, _ = zhang17_sweep(copy_hints, sorted(tmp_path.glob("*.png")), 32, points, HintSampling())
    assert again == curve  # the same hints for every checkpoint


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Checkpoints of both imported releases (random weights) and a folder of photos."""
    tmp = tmp_path_factory.mktemp("protocol")
    eccv = randomize(ECCVReference(), seed=0)
    with torch.no_grad():
        eccv.model_out.weight.copy_((gamut_centers() / 110.0).T[:, :, None, None])
    paths = {}
    for kind, reference in (("eccv16", eccv), ("siggraph17", randomize(SiggraphReference(), seed=1))):
        torch.save(reference.state_dict(), tmp / f"{kind}.pth")
        paths[kind] = save_checkpoint(import_released(kind, tmp / f"{kind}.pth"), tmp / f"{kind}.ckpt", tmp)
    (tmp / "photos").mkdir()
    for i in range(3):
        Image.fromarray(colour_photo(i)).save(tmp / "photos" / f"{i}.png")
    return paths, tmp / "photos"


@pytest.mark.slow
def test_protocol_shorthand_prints_measured_beside_published_with_its_source(imported, tmp_path, capsys):
    paths, photos = imported
    common = ["data=folder", f"data.root={photos}", "data.size=32", "evaluate.protocol_images=1"]
    assert evaluate_main([f"ckpt={paths['siggraph17']}", "protocol=zhang17", f"out={tmp_path}", *common]) == 0
    report = (tmp_path / "protocol.md").read_text()
    assert "| 50 |" in report and "| 30.42 |" in report and "psnrs_siggraph.npy" in report
    assert evaluate_main([f"ckpt={paths['eccv16']}", "protocol=zhang16", f"out={tmp_path}", *common]) == 0
    report = (tmp_path / "protocol.md").read_text()
    assert "1 image(s)" in report and "| auc |" in report and "not verified" in report
    capsys.readouterr()


def test_protocol_errors_are_one_line(imported, capsys):
    paths, photos = imported
    for argv, message in (([f"ckpt={paths['eccv16']}", "protocol=zhang16"], "reads the images of a folder"),
                          ([f"ckpt={paths['eccv16']}", "protocol=zhang17", "data=folder", f"data.root={photos}"],
                           "needs a model that takes hints"),
                          ([f"ckpt={paths['eccv16']}", "protocol=zhang18"], "valid: ddcolor, zhang16, zhang17")):
        assert evaluate_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err
