import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from colorlab.config import ConfigError, available_experiments, compose, parse_cli


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "colorlab.fit", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("experiment", sorted(available_experiments()))
def test_every_experiment_composes_with_existing_keys_only(experiment):
    cfg = compose(experiment)
    assert cfg.experiment == experiment and cfg.description
    assert cfg.run_dir.startswith(f"runs/{experiment}/")


def test_precedence_defaults_group_experiment_cli():
    assert compose("regression_l2").data.name == "synthetic"  # default group choice
    cfg = compose("regression_l2", ["data=folder", "data.root=/photos", "optim.lr=0.5", "+extra.note=hi"])
    assert cfg.data.name == "folder" and cfg.data.root == "/photos"  # group file, then CLI
    assert cfg.data.batch_size == 32  # defaults.yaml still underneath the group file
    assert cfg.optim.lr == 0.5 and cfg.extra.note == "hi"
    assert cfg.choices.data == "folder"


def test_misspelled_key_names_the_closest_valid_key():
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer.max_epoch'.*trainer.max_epochs"):
        compose("regression_l2", overrides=["trainer.max_epoch=3"])


def test_unknown_experiment_and_group_choice_list_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown experiment 'nope'; available: .*regression_l2"):
        compose("nope")
    with pytest.raises(ConfigError, match="data=imagenet is not a data config; available: folder, samples"):
        compose("regression_l2", ["data=imagenet"])


def test_experiment_file_with_unknown_key_is_rejected(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("description: x\noptim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="'optim.learning_rate' .*in experiment file"):
        compose(str(bad))


def test_parse_cli_separates_groups_overrides_and_flags():
    assert parse_cli(["experiment=a", "data=folder", "data.root=/x", "+k=1", "--cfg"]) == (
        "a", ["data=folder", "data.root=/x", "+k=1"], {"--cfg"})
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_cli(["regression_l2"])


def test_cli_exit_codes_and_messages():
    bad = run_cli("experiment=regression_l2", "trainer.max_epoch=3")
    assert bad.returncode == 2 and "trainer.max_epochs" in bad.stderr
    listing = run_cli("--list")
    assert listing.returncode == 0 and "regression_l2" in listing.stdout
    printed = run_cli("experiment=regression_l2", "optim.lr=0.25", "--cfg")
    assert printed.returncode == 0
    assert OmegaConf.create(printed.stdout).optim.lr == 0.25


def test_commands_that_read_checkpoints_split_their_arguments_in_one_way(capsys):
    from colorlab.compare import main as compare_main
    from colorlab.config import split_arguments
    from colorlab.evaluate import main as evaluate_main

    options, overrides, paths = split_arguments(["a.ckpt", "out=o", "data.size=64", "b.ckpt"], ("out", "n"),
                                                ("data.",), "checkpoints")
    assert options == {"out": "o"} and overrides == ["data.size=64"] and paths == ["a.ckpt", "b.ckpt"]
    with pytest.raises(ConfigError, match=r"unknown option 'model.lam'; valid: out=\.\.\., n=\.\.\., data\.\.\."):
        split_arguments(["model.lam=0"], ("out", "n"), ("data.",), "checkpoints")
    with pytest.raises(ConfigError, match=r"unexpected argument\(s\) \['stray'\]"):
        split_arguments(["ckpt=x", "stray"], ("ckpt",))
    assert compare_main(["x.ckpt", "bogus=1"]) == 2
    assert capsys.readouterr().err.startswith("colorlab.compare: error: unknown option 'bogus'")
    assert evaluate_main(["ckpt=x.ckpt", "stray"]) == 2
    assert capsys.readouterr().err.startswith("colorlab.evaluate: error: unexpected argument(s) ['stray']")


def test_gnu_flags_are_options_of_the_same_split(capsys):
    from colorlab.config import split_arguments, usage_exit_code
    from colorlab.sweep.__main__ import parse_args

    flags = {"--count": int, "--out": str}
    argv = ["s.yaml", "--count", "5", "trainer.max_steps=3", "--out=runs/x"]
    assert split_arguments(argv, (), None, "the sweep file", flags) == (
        {"--count": 5, "--out": "runs/x"}, ["trainer.max_steps=3"], ["s.yaml"])
    for argv, message in [(["--count", "five"], "--count five: expected an integer"), (["--count"], "needs a value"),
                          (["--cout", "5"], "unknown option '--cout'; valid: --count, --out, config overrides")]:
        with pytest.raises(ConfigError, match=message):
            split_arguments(argv, (), None, "the sweep file", flags)
    # the SLURM array's command line (experiments/slurm/sweep.sbatch)
    sweep_file, options, overrides = parse_args(["sweeps/lambda.yaml", "--out", "o", "--storage", "o/journal.log",
                                                 "--count", "20", "trainer=gpu"])
    assert (str(sweep_file), overrides) == ("sweeps/lambda.yaml", ["trainer=gpu"])
    assert options == {"--out": Path("o"), "--storage": "o/journal.log", "--count": 20}
    assert usage_exit_code(["sweeps/lambda.yaml", "--help"], "usage") == 0 and capsys.readouterr().out == "usage\n"


@pytest.mark.parametrize("argv, message", [
    (["sweep", "sweeps/lambda.yaml", "--cout", "5"], "unknown option '--cout'; valid: --count, --out, --resume"),
    (["sweep", "sweeps/lambda.yaml", "--count", "0"], "--count and --workers must be >= 1"),
    (["sweep", "sweeps/lambda.yaml", "--resume", "runs/sweeps/x"], "give one sweep file (a new sweep) or --resume"),
    (["sweep", "--resume", "runs/sweeps/x", "trainer.max_epochs=1"], "drop ['trainer.max_epochs=1']"),
    (["import-weights", "eccv16", "w.pth", "--mask_offset", "0.5"],
     "unknown option '--mask_offset'; valid: --out, --prior, --mask-offset"),
    (["import-weights", "eccv16", "w.pth", "out=e.ckpt"], "unknown option 'out'; valid: --out"),
    (["import-weights", "eccv16", "w.pth", "--mask-offset", "0.3"], "--mask-offset must be one of 0.0, 0.5"),
    (["import-weights", "eccv17", "w.pth"], "expected KIND PATH with KIND one of eccv16, siggraph17"),
    (["video-evaluate", "a.ckpt", "--clip", "16"], "unknown option '--clip'; valid: --clips, --size"),
    (["video-evaluate", "a.ckpt", "--clips", "many"], "--clips many: expected an integer"),
    (["video-evaluate", "missing.ckpt"], "checkpoint(s) not found: ['missing.ckpt']"),
])
def test_a_bad_option_of_a_flag_command_is_one_line_and_exit_2(argv, message, capsys):
    from colorlab.cli import COMMANDS
    from colorlab.cli import main as colorlab

    assert colorlab(argv) == 2
    err = capsys.readouterr().err
    module = COMMANDS[argv[0]][0].removeprefix("colorlab.")
    assert err.count("\n") == 1 and err.startswith(f"colorlab.{module}: error: "), err
    assert message in err


def test_compute_device_is_the_local_ranks_gpu_or_the_cpu(monkeypatch):
    """Work outside the Trainer (prior, embeddings, commands) goes to this process's GPU: under DDP each rank
    its own (LOCAL_RANK, else SLURM_LOCALID), not all of them GPU 0."""
    import torch

    from colorlab.config import compute_device

    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert compute_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert compute_device() == torch.device("cuda", 1)
    monkeypatch.delenv("LOCAL_RANK")
    assert compute_device() == torch.device("cuda", 0)
    monkeypatch.setenv("SLURM_LOCALID", "2")
    assert compute_device() == torch.device("cuda", 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # srun with one visible GPU per task
    assert compute_device() == torch.device("cuda", 0)
