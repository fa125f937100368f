"""--rank METRIC for a sweep's summary: which metrics are valid (checked before any trial), their direction,
the columns scored, and summary.md ordered by the chosen column (the scoring itself: tests/test_sweep.py)."""

from pathlib import Path

import pytest
from PIL import Image

from colorlab.config import ConfigError
from colorlab.sweep.__main__ import main as sweep_main
from colorlab.sweep.ranking import Ranking, ranking
from colorlab.sweep.report import write_summary
from colorlab.sweep.spec import load_sweep

LAMBDA = Path("sweeps/lambda.yaml")  # metric val/auc_rebalanced, maximize


@pytest.mark.parametrize("argv, message", [
    (["--rank", "sharpness"], "--rank sharpness: neither the sweep's metric nor a comparison metric; valid: "
                              "val/auc_rebalanced, ab_error, "),
    (["--rank", "state"], "valid: val/auc_rebalanced, ab_error, "),
    (["--rank", "fid", "--fid-weights", "/nowhere/inception.pth"], "or --fid-weights random"),
    (["--rank", "fid"], "FID: no weights at "),  # hub by default: an empty torch hub here
    (["--lpips-weights", "/nowhere/alexnet.pth"], "or --lpips-weights random"),
])
def test_a_bad_rank_or_missing_metric_weights_is_one_line_before_any_trial(tmp_path, capsys, monkeypatch, argv,
                                                                           message):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "sweep"
    assert sweep_main([str(LAMBDA), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colorlab.sweep: error: ") and message in err and err.count("\n") == 1
    assert not out.exists()  # no sweep folder, no trial


@pytest.mark.filterwarnings("ignore:--(fid|lpips)-weights random")
def test_comparison_metrics_rank_in_their_own_direction_and_weights_add_their_columns():
    sweep = load_sweep(LAMBDA)
    with pytest.warns(UserWarning, match="^--fid-weights random: FID runs through random weights"):  # the sweep's
        ranking(sweep, "fid", {"fid": "random"})  # option, not compare's evaluate.fid_weights
    assert ranking(sweep) == ranking(sweep, "val/auc_rebalanced") == Ranking("val/auc_rebalanced", "maximize")
    assert ranking(sweep, "fid", {"fid": "random"}) == Ranking("fid", "minimize", ["fid"], {"fid": "random"})
    assert ranking(sweep, "delta_cf") == Ranking("delta_cf", "minimize", ["delta_cf"])
    assert ranking(sweep, "colorfulness").goal == ranking(sweep, "psnr").goal == "maximize"
    # the sweep's own metric ranks, LPIPS is scored as an extra column; columns in the comparison's order
    assert ranking(sweep, None, {"lpips": "random"}) == Ranking("val/auc_rebalanced", "maximize", ["lpips"],
                                                                {"lpips": "random"})
    assert ranking(sweep, "lpips", {"lpips": "random", "fid": "random"}).scored == ["fid", "lpips"]
    assert ranking(sweep, "psnr", {"lpips": "random"}).scored == ["psnr", "lpips"]
    with pytest.raises(ConfigError, match="valid: val/auc_rebalanced, ab_error"):
        ranking(sweep, "model.lam")  # a parameter is a column, not something to rank by


def test_summary_md_is_ordered_by_the_rank_column_missing_values_last(tmp_path):
    rows = [{"trial": f"trial-00{i}", "x": float(i), "val/loss": loss, "fid": fid, "state": state}
            for i, (loss, fid, state) in enumerate([(0.1, 9.0, "finished"), (0.3, None, "failed"),
                                                    (0.2, 4.0, "finished"), (0.4, 6.5, "finished")])]
    write_summary(rows, "val/loss", "fid", "minimize", tmp_path)
    title, _, header, _, *lines = (tmp_path / "summary.md").read_text().splitlines()
    assert title == f"Sweep {tmp_path.name}: fid (minimize), best first"
    assert header == "| trial | x | val/loss | fid | state |"
    assert [line.split("|")[1].strip() for line in lines] == ["trial-002", "trial-003", "trial-000", "trial-001"]
    assert lines[-1] == "| trial-001 | 1 | 0.3 | — | failed |"
    assert (tmp_path / "summary.csv").read_text().splitlines()[0] == "trial,x,val/loss,fid,state"
    with Image.open(tmp_path / "metric.png") as plot:  # val/loss against x alone: one panel, 4.5 in at 110 dpi
        assert plot.width == 495
    write_summary(rows, "val/loss", "val/loss", "maximize", tmp_path)
    lines = (tmp_path / "summary.md").read_text().splitlines()[4:]
    assert [line.split("|")[1].strip() for line in lines] == ["trial-003", "trial-001", "trial-002", "trial-000"]
