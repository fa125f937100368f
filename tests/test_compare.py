import json

import pytest
from PIL import Image

from colorlab.compare import main as compare_main
from colorlab.config import compose
from colorlab.evaluation.side_by_side import score_checkpoints
from colorlab.fit import train


@pytest.mark.filterwarnings("ignore:evaluate.lpips_weights=random")
def test_compare_reproduces_each_runs_validation_metrics(tiny_overrides, tmp_path):
    checkpoints = []
    for experiment in ("regression_l2", "bins1d"):
        run = tmp_path / experiment
        train(compose(experiment, tiny_overrides + [f"run_dir={run}", "trainer.max_epochs=1"]))
        checkpoints.append((run, run / "checkpoints" / "last.ckpt"))
    out = tmp_path / "cmp"
    assert compare_main([str(c) for _, c in checkpoints] + [f"out={out}", "n=3"]) == 0
    table = (out / "compare.md").read_text().splitlines()
    header = [h.strip() for h in table[0].strip("|").split("|")]
    # the library's scores with each checkpoint on its own split (as a sweep's --rank): here the same split
    scored = score_checkpoints([c for _, c in checkpoints], shared_data=False)
    for (run, _), line, own in zip(checkpoints, table[2:], scored, strict=True):
        cells = dict(zip(header, [c.strip() for c in line.strip("|").split("|")], strict=True))
        saved = json.loads((run / "metrics.json").read_text())
        assert cells["experiment"] == run.name
        assert float(cells["psnr"]) == pytest.approx(saved["val/psnr"], rel=5e-4)  # 4 significant digits
        assert cells == {"experiment": own.experiment, **{k: f"{v:.4g}" for k, v in own.metrics.items()}}
    with Image.open(out / "compare.png") as grid:
        assert grid.width == 4 * 130 and grid.height > 3 * 128  # gray | 2 experiments | truth
    # ranked by any metric, best first; LPIPS (random weights) added as a column
    for rank, lowest_first in (("delta_cf", True), ("auc", False)):
        assert compare_main([str(c) for _, c in checkpoints] + [f"out={out}", f"rank={rank}",
                                                                "evaluate.lpips_weights=random"]) == 0
        table = (out / "compare.md").read_text().splitlines()
        header = [h.strip() for h in table[0].strip("|").split("|")]
        values = [float(line.strip("|").split("|")[header.index(rank)]) for line in table[2:]]
        assert values == sorted(values, reverse=not lowest_first) and "lpips" in header
    assert compare_main([str(c) for _, c in checkpoints] + [f"out={out}", "rank=fid"]) == 2


def test_compare_reports_missing_checkpoints(tmp_path, capsys):
    assert compare_main([str(tmp_path / "nope.ckpt")]) == 2
    assert "checkpoint(s) not found" in capsys.readouterr().err


def test_two_runs_of_one_experiment_get_a_row_each_named_by_what_differs(tiny_overrides, tmp_path):
    checkpoints = []
    for n_bins in (10, 20):
        run = tmp_path / f"bins{n_bins}"
        train(compose("bins1d", tiny_overrides + [f"run_dir={run}", "trainer.max_epochs=1", f"model.n_bins={n_bins}"]))
        checkpoints.append(run / "checkpoints" / "last.ckpt")
    out = tmp_path / "cmp"
    assert compare_main([str(c) for c in checkpoints] + [f"out={out}", "n=2"]) == 0
    rows = [line.split("|")[1].strip() for line in (out / "compare.md").read_text().splitlines()[2:]]
    assert rows == ["bins1d (model.n_bins=10)", "bins1d (model.n_bins=20)"]  # one row before: keyed by experiment


def test_labels_tell_checkpoints_apart():
    from pathlib import Path

    from colorlab.evaluation.side_by_side import unique_labels

    def config(experiment, run_dir, trainer=None, **model):
        return {"experiment": experiment, "run_dir": run_dir, "seed": 0, "model": {"lr": 1e-3, **model},
                "logger": {"name": "csv"}, "prior": {"cache_dir": run_dir}, "ckpt_path": run_dir,
                "trainer": trainer or {"accelerator": "cpu", "max_epochs": 5}, "data": {"num_workers": 2}}

    paths = [Path(f"runs/r{i}/checkpoints/last.ckpt") for i in range(5)]
    configs = [config("a", "runs/r0", lam=0.5), config("a", "runs/r1", lam=0.0),
               config("b", "runs/r2"), config("c", "runs/r3"), config("c", "runs/r4")]
    # run_dir, ckpt_path, logger and cache dirs differ too, but tell nothing about what was learned
    assert unique_labels(configs, paths) == ["a (model.lam=0.5)", "a (model.lam=0.0)", "b", "c (r3)", "c (r4)"]
    # where the device, workers or launcher differ too, the model's setting comes first, those not at all
    gpu = config("a", "runs/r1", {"accelerator": "gpu", "devices": 1, "max_epochs": 5}, lam=0.0)
    gpu["data"]["num_workers"] = "auto"
    assert unique_labels([configs[0], gpu], paths[:2]) == ["a (model.lam=0.5)", "a (model.lam=0.0)"]
    # the budget does tell runs apart; 0 and 0.0 do not
    longer = config("a", "runs/r1", {"accelerator": "cpu", "max_epochs": 30}, lam=0)
    assert unique_labels([config("a", "runs/r0", lam=0.0), longer], paths[:2]) == [
        "a (trainer.max_epochs=5)", "a (trainer.max_epochs=30)"]
    # two checkpoints of one run: its name and theirs
    one_run = [Path("runs/x/checkpoints/last.ckpt"), Path("runs/x/checkpoints/epoch=2.ckpt")]
    assert unique_labels([config("a", "x"), config("a", "x")], one_run) == ["a (x/last)", "a (x/epoch=2)"]
    same = [config("a", "x"), config("a", "x")]
    assert unique_labels(same, [Path("x/checkpoints/last.ckpt")] * 2) == ["a (x/last) #1", "a (x/last) #2"]
    many = [config("a", "x", p=1, q=1, r=1, s=1), config("a", "x", p=2, q=2, r=2, s=2)]
    assert unique_labels(many, paths[:2]) == ["a (model.p=1, model.q=1, model.r=1, ...)",
                                              "a (model.p=2, model.q=2, model.r=2, ...)"]


def test_a_label_with_a_bar_stays_in_its_cell():
    from colorlab.compare import markdown_table

    table = markdown_table({"a (model.tag=x|y)": {"psnr": 20.0}, "b": {"psnr": 21.0, "fid": 3.0}})
    lines = table.splitlines()
    assert lines[0] == "| experiment | psnr | fid |"
    assert lines[2] == "| a (model.tag=x\\|y) | 20 | — |"  # Markdown: an escaped bar is text, not a new cell
    assert [line.replace("\\|", "").count("|") for line in lines] == [4, 4, 4, 4]
