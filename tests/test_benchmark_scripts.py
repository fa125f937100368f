"""benchmarks/gpu.sh, the one command for every GPU figure: its parts must fit the 5 minutes it promises, and
each part must call a benchmark that exists with options that benchmark accepts. Checked without a GPU."""

import argparse
import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIVE_MINUTES = 300
WITH_TESTS = ("gpu_tests", "readme_job")  # --tests adds them after the figures, outside the five minutes


def dry_run() -> list[tuple[str, int, list[str]]]:
    """(part, limit in s, command) of each part ``gpu.sh --tests`` would run."""
    out = subprocess.run(["bash", str(ROOT / "benchmarks/gpu.sh"), "--dry-run", "--tests"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    return [(m[1], int(m[2]), shlex.split(m[3])) for m in re.finditer(r"^(\S+) +(\d+) s  (.*)$", out.stdout, re.M)]


def test_the_figure_parts_fit_five_minutes_and_the_tests_come_after():
    parts = dry_run()
    names = [name for name, _, _ in parts]
    assert names[-2:] == list(WITH_TESTS), names
    figures = sum(limit for name, limit, _ in parts if name not in WITH_TESTS)
    assert 0 < figures <= FIVE_MINUTES - 10, f"{figures} s of part limits, and the start-up checks come on top"
    assert {"pipeline_eccv16_256", "speed_eccv16_256", "throughput"} <= set(names)


def test_gpu_sh_refuses_an_unknown_option():
    out = subprocess.run(["bash", str(ROOT / "benchmarks/gpu.sh"), "--test"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 2 and "--test" in out.stderr and "--tests" in out.stderr


class Parsed(Exception):
    pass


@pytest.mark.parametrize("part", [name for name, _, command in dry_run() if "benchmarks/" in " ".join(command)])
def test_each_part_gives_its_benchmark_options_it_accepts(part, monkeypatch):
    command = next(command for name, _, command in dry_run() if name == part)
    script = next(arg for arg in command if arg.startswith("benchmarks/"))
    argv = command[command.index(script) + 1:]

    def parse_and_stop(self, args=None, namespace=None):  # the script's own parser, then no work
        _, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        raise Parsed

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
    monkeypatch.setattr(sys, "argv", [script, *argv])
    main = runpy.run_path(str(ROOT / script))["main"]
    with pytest.raises(Parsed):
        main()
