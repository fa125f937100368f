"""Every experiment through every command that reads a checkpoint, as timm tests every model: 3 training
steps -> evaluate -> compare -> study create. The commands must agree on the same held-out batches."""

import json

import pytest

from colorlab.compare import main as compare_main
from colorlab.config import available_experiments, compose
from colorlab.evaluate import main as evaluate_main
from colorlab.fit import train
from colorlab.models import load_colorizer
from colorlab.study.create import create_study
from colorlab.study.design import settings_from


@pytest.mark.slow
@pytest.mark.parametrize("experiment", sorted(available_experiments()))
def test_three_steps_then_evaluate_compare_and_study_create(experiment, tiny_overrides, tmp_path, capsys):
    train(compose(experiment, [*tiny_overrides, "trainer.max_steps=3", "data.val_size=8", "data.batch_size=4"]))
    checkpoint = tmp_path / "run" / "checkpoints" / "last.ckpt"
    model = load_colorizer(checkpoint)

    assert evaluate_main([f"ckpt={checkpoint}", f"out={tmp_path / 'evaluate'}", "evaluate.fid=false",
                          "evaluate.lpips=false", "evaluate.video_clips=2"]) == 0
    evaluated = json.loads((tmp_path / "evaluate" / "metrics.json").read_text())["results"]
    decoding = "default" if "default" in evaluated else f"T={model.temperature:g}"

    assert compare_main([str(checkpoint), f"out={tmp_path / 'compare'}"]) == 0, capsys.readouterr().err
    table = (tmp_path / "compare" / "compare.md").read_text().splitlines()
    keys = [k.strip() for k in table[0].strip("|").split("|")][1:]
    compared = dict(zip(keys, map(float, table[2].strip("|").split("|")[1:]), strict=True))
    # the same checkpoint on the same held-out batches: compare's row is evaluate's default decoding
    for key in ("psnr", "ab_error", "colorfulness"):
        assert compared[key] == pytest.approx(evaluated[decoding][key], rel=1e-3), key

    directory = create_study("every", [checkpoint], settings_from({"practice": "1", "trials": "2",
                                                                   "control_trials": "0"}), root=tmp_path / "studies")
    study = json.loads((directory / "study.json").read_text())
    method = next(iter(study["methods"]))
    real, fake = (sorted((directory / "images" / folder).glob("*.png")) for folder in ("real", method))
    assert len(real) == len(fake) == study["settings"]["n_images"] >= 3
