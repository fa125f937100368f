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
