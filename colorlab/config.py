"""Config composition with OmegaConf alone (no Hydra).

Order, later wins: colorlab/conf/defaults.yaml < the chosen group files < the experiment file
(deltas only) < the command line. The config is in struct mode: setting a key that does not
exist is an error naming the closest valid keys; ``+key=value`` adds a new key on purpose.
"""

from __future__ import annotations

import difflib
import os
from datetime import datetime
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

CONF_DIR = Path(__file__).parent / "conf"
GROUPS = ("data", "net", "model", "trainer", "logger")
RUN_DIR_ENV = "COLORLAB_RUN_DIR"  # set by the first process so DDP children reuse its run_dir
_ABSENT = object()


class ConfigError(ValueError):
    """A config problem the user can fix; the message says what is valid."""


def experiments_dir() -> Path:
    env = os.environ.get("COLORLAB_EXPERIMENTS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "experiments"


def available_experiments() -> dict[str, Path]:
    root = experiments_dir()
    return {p.stem: p for p in sorted(root.glob("*.yaml"))} if root.is_dir() else {}


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def dotted_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every key of a config as 'a.b.c', inner nodes included."""
    keys = []
    for key in cfg.keys():
        full = f"{prefix}{key}"
        keys.append(full)
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none():
            keys += dotted_keys(node, full + ".")
    return keys


def _leaf_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for key in cfg.keys():
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and len(node) > 0:
            keys += _leaf_keys(node, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def _check_key(cfg: DictConfig, key: str, where: str) -> None:
    if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is _ABSENT:
        close = difflib.get_close_matches(key, dotted_keys(cfg), n=3, cutoff=0.8)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"unknown config key '{key}' ({where}){hint} "
                          f"Use +{key}=VALUE to add a new key, or --cfg to see all keys.")


def _load_yaml(path: Path) -> DictConfig:
    cfg = OmegaConf.load(path)
    if isinstance(cfg, ListConfig):
        raise ConfigError(f"{path} must hold a mapping of keys, not a list")
    return cfg


def resolve_experiment(name: str) -> Path:
    if name.endswith(".yaml") and Path(name).is_file():
        return Path(name)
    experiments = available_experiments()
    if name not in experiments:
        listing = ", ".join(experiments) or f"none found in {experiments_dir()}"
        raise ConfigError(f"unknown experiment '{name}'; available: {listing}")
    return experiments[name]


def split_overrides(overrides: list[str]) -> tuple[dict[str, str], list[str]]:
    """'group=choice' items (e.g. data=folder) apart from 'dotted.key=value' / '+new.key=value' ones."""
    choices, rest = {}, []
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"expected key=value, got '{item}'")
        if key in GROUPS:
            choices[key] = value
        else:
            rest.append(item)
    return choices, rest


def compose(experiment: str | None, overrides: list[str] | None = None) -> DictConfig:
    """The full config of one run, from command-line style overrides:
    'group=choice' (data=folder), 'dotted.key=value' (an existing key) or '+new.key=value'.
    experiment=None composes the defaults alone (for commands such as colorlab.prior).
    """
    base = _defaults()
    exp = _load_yaml(resolve_experiment(experiment)) if experiment else OmegaConf.create()
    choices, overrides = split_overrides(overrides or [])
    selected = {**base.pop("defaults"), **exp.pop("defaults", {}), **choices}
    for group, choice in selected.items():
        base[group] = OmegaConf.merge(base.get(group, {}), _group_file(group, choice))

    cfg = base
    OmegaConf.set_struct(cfg, True)
    for key in _leaf_keys(exp):
        _check_key(cfg, key, f"in experiment file {experiment}")
    cfg = _apply_dotted(OmegaConf.merge(cfg, exp), overrides)

    cfg.experiment = Path(experiment).stem if experiment else "defaults"
    with open_dict(cfg):
        cfg.choices = selected  # recorded for the run's config.yaml
    if cfg.run_dir is None:
        cfg.run_dir = default_run_dir(cfg.experiment)
        if cfg.ckpt_path == "last" and not os.environ.get(RUN_DIR_ENV):
            from colorlab.checkpoints import latest_run_with_checkpoint

            latest = latest_run_with_checkpoint(cfg.experiment)  # resume the latest run of this experiment
            cfg.run_dir = str(latest) if latest else cfg.run_dir
    return cfg


def override(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Apply command-line overrides to a finished config (e.g. a checkpoint's): a group choice
    replaces that whole group (defaults.yaml's keys under it + the group file); keys present in
    today's defaults but missing from ``cfg`` are filled in first."""
    base = _defaults()
    base.pop("defaults")
    cfg = OmegaConf.merge(base, cfg)
    choices, dotted = split_overrides(overrides)
    for group, choice in choices.items():
        cfg[group] = OmegaConf.merge(base.get(group, {}), _group_file(group, choice))
    OmegaConf.set_struct(cfg, True)
    return _apply_dotted(cfg, dotted)


def _defaults() -> DictConfig:
    return _load_yaml(CONF_DIR / "defaults.yaml")


def _group_file(group: str, choice: str) -> DictConfig:
    if group not in GROUPS:
        raise ConfigError(f"unknown config group '{group}'; groups: {', '.join(GROUPS)}")
    if choice not in group_choices(group):
        raise ConfigError(f"{group}={choice} is not a {group} config; available: {', '.join(group_choices(group))}")
    return _load_yaml(CONF_DIR / group / f"{choice}.yaml")


def _apply_dotted(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    for item in overrides:
        key = item.partition("=")[0]
        if key.startswith("+"):
            with open_dict(cfg):
                cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item[1:]]))
            continue
        _check_key(cfg, key, "on the command line")
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
    return cfg


def default_run_dir(experiment: str) -> str:
    """runs/<experiment>/<timestamp>; stable across SLURM requeues and DDP child processes."""
    if os.environ.get(RUN_DIR_ENV):
        return os.environ[RUN_DIR_ENV]
    if os.environ.get("SLURM_JOB_ID"):
        return f"runs/{experiment}/slurm-{os.environ['SLURM_JOB_ID']}"
    return f"runs/{experiment}/{datetime.now():%Y%m%d-%H%M%S}"


def parse_cli(argv: list[str]) -> tuple[str | None, list[str], set[str]]:
    """argv -> (experiment, overrides, flags such as --cfg)."""
    experiment, overrides, flags = None, [], set()
    for arg in argv:
        if arg.startswith("-"):
            flags.add(arg)
        elif "=" not in arg:
            raise ConfigError(f"expected key=value or a --flag, got '{arg}'")
        elif arg.startswith("experiment="):
            experiment = arg.partition("=")[2]
        else:
            overrides.append(arg)
    return experiment, overrides, flags


def experiment_listing() -> str:
    rows = []
    for name, path in available_experiments().items():
        rows.append(f"{name:<18} {OmegaConf.load(path).get('description', '')}")
    return "\n".join(rows)


def key_value_options(argv: list[str], allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, str]:
    """The 'key=value' arguments of a small command (colorize, prepare), checked against ``allowed``."""
    options = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = sorted(set(options) - set(allowed)) + [a for a in argv if "=" not in a]
    missing = [k for k in required if k not in options]
    if unknown or missing:
        problem = f"unknown {unknown}" if unknown else f"missing {missing}"
        raise ConfigError(f"{problem}; options: {', '.join(f'{k}=...' for k in allowed)}")
    return options


def usage_exit_code(argv: list[str], doc: str) -> int | None:
    """For the small commands: print ``doc`` and return the exit code when argv asks for help
    (0) or is empty (2); None when the command should run."""
    if argv and argv[0] not in ("-h", "--help"):
        return None
    print(doc)
    return 0 if argv else 2
