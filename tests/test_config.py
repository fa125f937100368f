import subprocess
import sys

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
