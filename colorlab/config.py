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
TRIAL_ENV = "COLORLAB_SWEEP_TRIAL"  # set by an offline sweep: JSON telling a trial's fit where to report its metric
_ABSENT = object()


def compute_device():
    """The torch.device work outside the Trainer runs on (the prior, embeddings, the commands): this process's
    GPU when there is one, else the CPU. Under DDP each process takes its local rank's GPU (LOCAL_RANK from
    Lightning's launcher or torchrun, SLURM_LOCALID under srun), so ranks that start together do not all
    load GPU 0."""
    import torch

    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0)))
    return torch.device("cuda", local_rank % torch.cuda.device_count())  # one GPU per task: its only one


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


# Trainer arguments that colorlab sets itself, with the key that controls each instead
TRAINER_OWNED = {"logger": "logger=wandb|csv|none", "callbacks": "the checkpoint settings under checkpoint.*",
                 "plugins": "(colorlab's atomic checkpoint writer)", "default_root_dir": "run_dir=PATH"}


def trainer_arguments() -> list[str]:
    """Every argument of Lightning's Trainer that a ``trainer.*`` key may set."""
    import inspect

    from pytorch_lightning import Trainer

    return [name for name in inspect.signature(Trainer.__init__).parameters if name != "self"]


def _check_key(cfg: DictConfig, key: str, where: str) -> bool:
    """Whether ``key`` exists; raises with the closest valid keys when it does not. A ``trainer.X`` key
    that is an argument of Lightning's Trainer is valid without ``+`` (returns False: it must be added)."""
    if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is not _ABSENT:
        return True
    candidates = dotted_keys(cfg)
    group, _, name = key.partition(".")
    if group == "trainer":
        if name in TRAINER_OWNED:
            raise ConfigError(f"trainer.{name} is set by colorlab; use {TRAINER_OWNED[name]}")
        arguments = [a for a in trainer_arguments() if a not in TRAINER_OWNED]
        if name in arguments:
            return False
        candidates = sorted(set(candidates) | {f"trainer.{a}" for a in arguments})
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.8)
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
        _check_key(cfg, key, f"in experiment file {experiment}")  # raises on an unknown key
    with open_dict(cfg):  # trainer.* keys may be Trainer arguments that defaults.yaml does not list
        cfg = _merge(cfg, exp, f"experiment file {experiment}")
    OmegaConf.set_struct(cfg, True)
    cfg = _apply_dotted(cfg, overrides)

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
    """Command-line overrides. Their values are data, never code: an OmegaConf interpolation such
    as ``${oc.env:TOKEN}`` is refused, so no secret from the environment or a file can end up in a
    run's config.yaml, checkpoint or W&B config."""
    for item in overrides:
        key, _, value = item.partition("=")
        if "${" in value:
            raise ConfigError(f"{key}={value}: values on the command line are taken literally and may not hold "
                              "interpolations ('${...}'); write the value itself")
        added = key.startswith("+")
        key = key.removeprefix("+")
        exists = added or _check_key(cfg, key, "on the command line")
        try:
            parsed = OmegaConf.from_dotlist([f"{key}={value}"])
        except Exception as e:  # a YAML syntax error in the value, e.g. an unclosed bracket or 'a: b'
            raise ConfigError(f"{key}={value}: the value is not valid YAML ({type(e).__name__}); "
                              f"quote it, e.g. {key}='\"{value}\"'") from None
        if exists and not added:
            _check_type(key, value, OmegaConf.select(cfg, key), OmegaConf.select(parsed, key))
            cfg = _merge(cfg, parsed, "the command line")
        else:
            with open_dict(cfg):
                cfg = _merge(cfg, parsed, "the command line")
            OmegaConf.set_struct(cfg, True)
    return cfg


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               DictConfig: "a mapping", ListConfig: "a list"}


def _check_type(key: str, text: str, old, new) -> None:
    """A new value must be of the type of the value it replaces (an int where an int was); null and
    strings (paths, names) replace or are replaced freely, numbers widen from int to float."""
    if old is None or new is None or isinstance(old, str) and not isinstance(new, (DictConfig, ListConfig)):
        return
    expected = next(t for t in (bool, int, float, str, DictConfig, ListConfig) if isinstance(old, t))
    compatible = isinstance(new, expected) and not (expected is int and isinstance(new, bool))
    if expected is float and isinstance(new, int) and not isinstance(new, bool):
        compatible = True
    if not compatible:
        raise ConfigError(f"{key}={text}: expected {_TYPE_NAMES[expected]} (the current value is "
                          f"{OmegaConf.to_yaml(old).strip() if isinstance(old, (DictConfig, ListConfig)) else old!r})"
                          + ("; quote a text that holds ': ', brackets or braces" if expected is str else ""))


def _merge(cfg: DictConfig, other: DictConfig, where: str) -> DictConfig:
    """OmegaConf.merge with type errors (``data.size=abc``) as one ConfigError naming key and value."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.merge(cfg, other)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "?"
        value = OmegaConf.select(other, key, default="?") if key != "?" else "?"
        expected = type(OmegaConf.select(cfg, key, default=None)).__name__ if key != "?" else "another type"
        raise ConfigError(f"{key}={value} ({where}) is not valid: expected a value of type {expected}") from None


def default_run_dir(experiment: str) -> str:
    """runs/<experiment>/<timestamp>-<pid>; stable across SLURM requeues and DDP child processes."""
    if os.environ.get(RUN_DIR_ENV):
        return os.environ[RUN_DIR_ENV]
    if os.environ.get("SLURM_JOB_ID"):
        return f"runs/{experiment}/slurm-{os.environ['SLURM_JOB_ID']}"
    # the process id keeps two runs started in the same second apart
    return f"runs/{experiment}/{datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"


def parse_cli(argv: list[str]) -> tuple[str | None, list[str], set[str]]:
    """argv -> (experiment, overrides, flags such as --cfg)."""
    experiment, overrides, flags = None, [], set()
    for arg in argv:
        if arg.startswith("--") and "=" in arg:  # W&B's ${args} macro writes --key=value
            arg = arg[2:]
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


def split_arguments(argv: list[str], own: tuple[str, ...], override_prefixes: tuple[str, ...] | None = None,
                    positional: str | None = None, flags: dict[str, type] | None = None
                    ) -> tuple[dict[str, object], list[str], list[str]]:
    """The arguments of a command: (its own options, config overrides ``key=value`` for the checked config,
    positional arguments). Own options are ``key=value`` with ``key`` in ``own``, or, for the commands whose
    options keep their GNU spelling beside the overrides (sweep, import_weights, video.evaluate), ``--name VALUE``
    or ``--name=VALUE`` with ``--name`` in ``flags`` (name -> type the value converts to, kept under
    ``--name``). ``override_prefixes``: the overrides it takes (None: any key, checked later by ``override``);
    ``positional``: what its positional arguments are (None: it takes none). ConfigError names what is not
    valid."""
    flags = flags or {}
    valid = [*flags, *(f"{k}=..." for k in own)] + \
        (["config overrides key=value"] if override_prefixes is None else [f"{p}..." for p in override_prefixes])
    options, overrides, positionals = {}, [], []
    args = iter(argv)
    for arg in args:
        key, sep, value = arg.partition("=")
        if key in flags:
            options[key] = _flag_value(key, value if sep else next(args, None), flags[key])
        elif not sep and not arg.startswith("-"):
            positionals.append(arg)
        elif key in own:
            options[key] = value
        elif sep and not key.startswith("-") and (override_prefixes is None or key.startswith(override_prefixes)):
            overrides.append(arg)
        else:
            raise ConfigError(f"unknown option {key!r}; valid: {', '.join(valid)}")
    if positionals and positional is None:
        raise ConfigError(f"unexpected argument(s) {positionals}: options are key=value")
    return options, overrides, positionals


def _flag_value(flag: str, text: str | None, kind: type) -> object:
    if text is None:
        raise ConfigError(f"{flag} needs a value")
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{flag} {text}: expected {_TYPE_NAMES.get(kind, kind.__name__)}") from None


def usage_exit_code(argv: list[str], doc: str) -> int | None:
    """For the small commands: print ``doc`` and return the exit code when argv asks for help
    (0: -h or --help anywhere) or is empty (2); None when the command should run."""
    if argv and not {"-h", "--help"} & set(argv):
        return None
    print(doc)
    return 0 if argv else 2
