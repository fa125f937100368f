"""A W&B sweep YAML, checked and mapped onto Optuna.

``load_sweep`` reads the file and refuses a malformed one before any trial starts. Each entry of
``parameters`` becomes a ``Param`` whose ``suggest(trial)`` draws its value through Optuna with the
same support as W&B's form (``values``, ``value``, ``min``/``max``, and the ``distribution`` names
below). ``trial_argv`` turns the YAML's ``command`` into an argument list (never a shell); only
``colorlab.fit`` may run.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any

import yaml

METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
# W&B distribution names -> how they are drawn (see Param.suggest)
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform",
                 "log_uniform_values", "inv_log_uniform_values", "normal", "q_normal", "log_normal")
MACROS = ("${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}")
FIT_PROGRAMS = ("colorlab/fit.py", "colorlab.fit")
# the uniform draw behind the normal forms stays inside (EPS, 1 - EPS): values within ~6 sigma
EPS = 1e-9


class SweepError(ValueError):
    """A sweep file or option that cannot run; the message names the problem and what is valid."""


@dataclass
class Param:
    """One swept key: a W&B parameter form, drawn through Optuna with the same support."""

    name: str
    kind: str  # one of DISTRIBUTIONS
    values: list = field(default_factory=list)
    low: float = 0.0
    high: float = 0.0
    q: float | None = None
    mu: float = 0.0
    sigma: float = 1.0

    @property
    def grid_values(self) -> list | None:
        return [self.values[0]] if self.kind == "constant" else self.values if self.kind == "categorical" else None

    def suggest(self, trial) -> Any:
        name, kind = self.name, self.kind
        if kind in ("constant", "categorical"):
            return trial.suggest_categorical(name, self.values)
        if kind == "int_uniform":
            return trial.suggest_int(name, int(self.low), int(self.high))
        if kind in ("uniform", "q_uniform"):
            return trial.suggest_float(name, self.low, self.high, step=self.q)
        if kind in ("log_uniform", "log_uniform_values"):  # log_uniform: min/max are natural-log exponents
            low, high = (math.exp(self.low), math.exp(self.high)) if kind == "log_uniform" else (self.low, self.high)
            return trial.suggest_float(name, low, high, log=True)
        if kind == "inv_log_uniform_values":  # 1/X with X log-uniform between 1/max and 1/min
            return 1.0 / trial.suggest_float(f"{name}:inverse", 1.0 / self.high, 1.0 / self.low, log=True)
        # normal forms: Optuna draws u uniform in (0, 1) (TPE models u), the value is the normal quantile of u
        u = trial.suggest_float(f"{name}:quantile", EPS, 1 - EPS)
        value = NormalDist(self.mu, self.sigma).inv_cdf(u)
        if kind == "q_normal":
            value = round(value / self.q) * self.q
        return math.exp(value) if kind == "log_normal" else value


@dataclass
class Sweep:
    name: str
    method: str
    metric: str
    goal: str
    params: list[Param]
    command: list[str]
    program: str
    early_terminate: dict | None
    raw: dict

    @property
    def grid(self) -> dict[str, list] | None:
        """The grid of a grid sweep: every parameter's values (constants as one value)."""
        return {p.name: p.grid_values for p in self.params} if self.method == "grid" else None

    @property
    def grid_size(self) -> int | None:
        return math.prod(len(v) for v in self.grid.values()) if self.grid is not None else None


def load_sweep(path: Path) -> Sweep:
    if not path.is_file():
        available = sorted(map(str, Path("sweeps").glob("*.yaml")))
        raise SweepError(f"sweep file {path} does not exist; available: {available}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{path} must hold a mapping with program, method, metric and parameters; got "
                         f"{type(raw).__name__ if raw is not None else 'an empty file'}")
    return parse_sweep(raw, str(path))


def parse_sweep(raw: dict, where: str = "the sweep") -> Sweep:
    missing = [k for k in ("program", "method", "metric", "parameters") if k not in raw]
    if missing:
        raise SweepError(f"{where} lacks {missing}; a sweep file needs program, method, metric (name, goal) and "
                         "parameters, e.g. sweeps/lambda.yaml")
    method = raw["method"]
    if method not in METHODS:
        raise SweepError(f"{where}: method={method!r} is not supported; valid: {', '.join(METHODS)}")
    metric = raw["metric"]
    if not isinstance(metric, dict) or not isinstance(metric.get("name"), str):
        raise SweepError(f"{where}: metric must be a mapping with a name, e.g. {{name: val/auc, goal: maximize}}")
    goal = metric.get("goal", "minimize")
    if goal not in GOALS:
        raise SweepError(f"{where}: metric.goal={goal!r} is not valid; valid: {', '.join(GOALS)}")
    if not isinstance(raw["parameters"], dict) or not raw["parameters"]:
        raise SweepError(f"{where}: parameters must be a non-empty mapping of config keys to W&B parameter forms")
    params = [parse_param(name, spec, where) for name, spec in raw["parameters"].items()]
    if method == "grid":
        continuous = [p.name for p in params if p.grid_values is None]
        if continuous:
            raise SweepError(f"{where}: a grid sweep needs values (or a value) for every parameter; {continuous} "
                             "are distributions: use method: random or bayes")
    command = raw.get("command", ["${env}", "${interpreter}", "${program}", "${args}"])
    if not isinstance(command, list) or not all(isinstance(c, str | int | float) for c in command):
        raise SweepError(f"{where}: command must be a list of arguments (one per line in YAML), e.g. "
                         "[${env}, python, -m, colorlab.fit, experiment=unet_bins, ${args_no_hyphens}]; "
                         f"got {command!r}")
    early = raw.get("early_terminate")
    if early is not None and (not isinstance(early, dict) or early.get("type") != "hyperband"):
        raise SweepError(f"{where}: early_terminate supports type: hyperband (with min_iter or max_iter, eta); "
                         f"got {early!r}")
    return Sweep(name=str(raw.get("name", "sweep")), method=method, metric=metric["name"], goal=goal,
                 params=params, command=[str(c) for c in command], program=str(raw["program"]),
                 early_terminate=early, raw=raw)


def parse_param(name: str, spec: Any, where: str) -> Param:
    def fail(problem: str) -> SweepError:
        return SweepError(f"{where}: parameter {name}: {problem}. Valid forms: values: [...], value: X, "
                          f"min/max (ints or floats), or distribution: one of {', '.join(DISTRIBUTIONS)}")

    if not isinstance(spec, dict):
        raise fail(f"expected a mapping, got {spec!r}")
    kind = spec.get("distribution")
    if kind is None:  # W&B infers the distribution from the keys present
        kind = ("categorical" if "values" in spec else "constant" if "value" in spec
                else "int_uniform" if isinstance(spec.get("min"), int) and isinstance(spec.get("max"), int)
                else "uniform" if "min" in spec and "max" in spec else None)
        if kind is None:
            raise fail(f"no values, value or min/max in {spec}")
    if kind not in DISTRIBUTIONS:
        raise fail(f"distribution {kind!r} is not supported")
    if kind == "constant":
        if "value" not in spec:
            raise fail("constant needs value")
        return Param(name, kind, values=[spec["value"]])
    if kind == "categorical":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise fail("values must be a non-empty list")
        if not all(v is None or isinstance(v, bool | int | float | str) for v in values):
            raise fail("values must be numbers, strings, booleans or null")
        return Param(name, kind, values=values)
    if kind in ("normal", "q_normal", "log_normal"):
        mu, sigma, q = spec.get("mu", 0.0), spec.get("sigma", 1.0), spec.get("q", 1.0)
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (mu, sigma, q)) or sigma <= 0 or q <= 0:
            raise fail(f"needs finite mu, sigma > 0 (and q > 0); got mu={mu}, sigma={sigma}, q={q}")
        return Param(name, kind, mu=float(mu), sigma=float(sigma), q=float(q) if kind == "q_normal" else None)
    low, high = spec.get("min"), spec.get("max")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in (low, high)):
        raise fail(f"{kind} needs finite numbers min and max; got min={low}, max={high}")
    if low >= high:
        raise fail(f"min must be below max; got min={low}, max={high}")
    if kind == "int_uniform" and not (isinstance(low, int) and isinstance(high, int)):
        raise fail(f"int_uniform needs integer min and max; got min={low}, max={high}")
    if kind in ("log_uniform_values", "inv_log_uniform_values") and low <= 0:
        raise fail(f"{kind} needs min > 0; got {low}")
    q = spec.get("q")
    if kind == "q_uniform":
        if not isinstance(q, int | float) or q <= 0 or not math.isclose((high - low) / q, round((high - low) / q)):
            raise fail(f"q_uniform needs q > 0 that divides max - min; got q={q}")
    return Param(name, kind, low=low, high=high, q=float(q) if kind == "q_uniform" else None)


def trial_argv(sweep: Sweep, params: dict, extra: list[str]) -> list[str]:
    """The YAML's command with W&B's macros filled in, as an argument list (no shell), followed by
    ``extra`` (overrides, run_dir). Refused unless it runs colorlab.fit."""
    args = [f"{key}={value}" for key, value in params.items()]
    argv: list[str] = []
    for part in sweep.command:
        if part == "${env}":
            continue
        if part in ("${interpreter}", "python", "python3"):
            argv.append(sys.executable)
        elif part == "${program}":
            argv += ["-m", "colorlab.fit"] if sweep.program in FIT_PROGRAMS else [sweep.program]
        elif part in ("${args_no_hyphens}", "${args}"):
            argv += args if part == "${args_no_hyphens}" else [f"--{a}" for a in args]
        elif part.startswith("${"):
            raise SweepError(f"command macro {part} is not supported; valid: {', '.join(MACROS)}")
        else:
            argv.append(part)
    if argv[:3] != [sys.executable, "-m", "colorlab.fit"]:
        shown = " ".join(sweep.command)
        raise SweepError(f"a trial must run colorlab.fit (command: [${{env}}, python, -m, colorlab.fit, ..."
                         f"${{args_no_hyphens}}], or program: colorlab/fit.py); this sweep's command is: {shown}")
    return argv + extra
