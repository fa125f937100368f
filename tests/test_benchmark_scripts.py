"""benchmarks/gpu.sh, the one command for every GPU figure: its figure parts must fit the 5 minutes it promises,
and each part must give the benchmark it calls options that benchmark's own parser (and the config) accept.
Checked without a GPU, so that the first run on a lent GPU does not die on a typo."""

import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIVE_MINUTES = 300
EXTRA = ("gpu_tests", "readme_job", "compile_unet_bins")  # --all adds them after the figures


def dry_run() -> list[tuple[str, int, list[str]]]:
    """(part, limit in s, command) of each part ``gpu.sh --all`` would run."""
    out = subprocess.run(["bash", str(ROOT / "benchmarks/gpu.sh"), "--dry-run", "--all"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return [(m[1], int(m[2]), shlex.split(m[3])) for m in re.finditer(r"^(\S+) +(\d+) s  (.*)$", out.stdout, re.M)]


PARTS = dry_run()


def test_the_figure_parts_fit_five_minutes_and_the_rest_comes_after():
    names = [name for name, _, _ in PARTS]
    assert names[-len(EXTRA):] == list(EXTRA), names
    figures = sum(limit for name, limit, _ in PARTS if name not in EXTRA)
    assert 0 < figures <= FIVE_MINUTES - 10, f"{figures} s of part limits, and the start-up checks come on top"
    assert {"pipeline_eccv16_256", "speed_eccv16_256", "speed_unet_bins_256", "throughput"} <= set(names)


def test_gpu_sh_refuses_an_unknown_option():
    out = subprocess.run(["bash", str(ROOT / "benchmarks/gpu.sh"), "--tests"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "--tests" in out.stderr and "--all" in out.stderr


def parse(script: str, argv: list[str]):
    """The script's own parse_args (argparse, then its checks and the config's) on ``argv``."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return runpy.run_path(str(ROOT / script))["parse_args"](argv)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


BENCHMARK_PARTS = [(name, command) for name, _, command in PARTS if any(a.startswith("benchmarks/") for a in command)]


@pytest.mark.parametrize("name, command", BENCHMARK_PARTS, ids=[name for name, _ in BENCHMARK_PARTS])
def test_each_part_gives_its_benchmark_options_it_accepts(name, command):
    script = next(arg for arg in command if arg.startswith("benchmarks/"))
    args = parse(script, command[command.index(script) + 1:])
    assert args.device == "cuda"


@pytest.mark.parametrize("script, argv, error", [
    ("benchmarks/speed_keys.py", ["--skip", "fp32 NCWH"], "invalid choice"),
    ("benchmarks/speed_keys.py", ["--skip", "defaults"], "compared with the defaults"),
    ("benchmarks/speed_keys.py", ["--set", "data.sise=256"], "data.size"),
    ("benchmarks/pipeline.py", ["--sources", "repeated"], "synthetic or folder"),
    ("benchmarks/pipeline.py", ["--experiment", "unet_binz"], "invalid choice"),
    ("benchmarks/throughput.py", ["--steps", "0"], ">= 1"),
])
def test_the_parsers_refuse_what_a_run_would_fail_on(script, argv, error, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse(script, argv)
    assert exit_.value.code == 2 and error in capsys.readouterr().err


def test_the_readme_job_part_composes():
    command = next(command for name, _, command in PARTS if name == "readme_job")
    out = subprocess.run([sys.executable, *command[1:], "--cfg"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode == 0 and "precision: bf16-mixed" in out.stdout, out.stderr[-2000:]
