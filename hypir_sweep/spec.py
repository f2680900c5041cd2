"""Sweep specs: a YAML file naming a base training config, a search space and how to search it.

``load_spec(path)`` validates the whole file up front; every mistake is a ``SpecError`` with one
sentence naming the key, the file, the bad value and what is allowed. Space keys are dotted
training-config keys (``lambda_gan``, ``opt_kwargs.weight_decay``); each bound and choice is
checked against the training config's own rules, so a sweep cannot propose a config that fails
to load. Nothing here imports Ray.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import yaml

from hypir_core.config import LOSS_WEIGHTS, SWANLAB_MODES, Config, config_from_dict, config_to_dict, load_config
from hypir_core.config import read_yaml
from hypir_core.config import show_value as _show
from hypir_core.errors import ConfigError
from hypir_core.schedule import MUTABLE
from hypir_core.tracking import local_mode_available

PARAM_TYPES = ("uniform", "loguniform", "int", "choice")
SCHEDULERS = ("asha", "hyperband", "median", "fifo", "pbt", "pb2")
POPULATION_BASED = ("pbt", "pb2")
SEARCHERS = ("optuna_tpe",)
SPEC_COPY = "sweep_spec.yaml"  # the copy of the spec a sweep keeps in its folder (what --resume and analyze.py read)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Keys a sweep sets itself in every trial: a space must not search them.
_TRIAL_OWNED = ("output_dir", "resume_from_checkpoint", "checkpointing_steps", "checkpoints_total_limit",
                "validation_steps", "max_train_steps", "report_to", "swanlab_project", "swanlab_mode", "logging_dir")


class SpecError(ConfigError):
    """A sweep spec key, type or value is not allowed."""


def _fail(message: str) -> NoReturn:
    raise SpecError(" ".join(message.split()))


@dataclass(frozen=True)
class Param:
    """One searched config key: ``type`` uniform | loguniform | int | choice, bounds or values, ``q`` step."""

    key: str
    type: str
    low: float | None = None
    high: float | None = None
    q: float | None = None
    values: tuple = ()

    def describe(self) -> str:
        if self.type == "choice":
            return f"choice {list(self.values)}"
        step = f", step {self.q:g}" if self.q else ""
        return f"{self.type} [{self.low:g}, {self.high:g}]{step}"

    def contains(self, value: Any) -> bool:
        if self.type == "choice":
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type == "int" and not float(value).is_integer():
            return False
        return self.low - 1e-12 <= value <= self.high + 1e-12


@dataclass(frozen=True)
class Scheduler:
    """Early stopping, or population-based training; times are the trial's validation rounds."""

    type: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2
    min_samples_required: int = 3
    # pbt / pb2: every ``perturbation_interval`` rounds the weakest quantile copies a strong trial's state
    # and goes on with mutated values of ``hyperparam_mutations`` (keys a schedule may change).
    perturbation_interval: int = 1
    hyperparam_mutations: tuple[Param, ...] = ()
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    # True: the population waits at every perturbation and trials are compared at the same round (each
    # restarts from its checkpoint there); False: each trial is compared with the others' latest scores.
    synch: bool = False

    @property
    def population_based(self) -> bool:
        return self.type in POPULATION_BASED


@dataclass(frozen=True)
class Search:
    algorithm: str = "optuna_tpe"
    seed: int = 0
    num_samples: int = 16
    max_concurrent_trials: int = 1
    points_to_evaluate: tuple = ()  # resolved dicts {space key: value}, each with a label
    point_labels: tuple = ()
    optuna_storage: str | None = None  # an Optuna storage URL; default sqlite in the sweep folder
    # TPE: trials drawn at random before it models (warm-start points count), a joint model of the
    # parameters, and running trials counted as bad (constant liar) so parallel proposals spread out.
    n_startup_trials: int = 4  # Optuna's 10 made 8-12 trial sweeps random search (bench/search.py)
    multivariate: bool = False
    constant_liar: bool = False


@dataclass(frozen=True)
class Resources:
    gpu: float = 1.0
    cpu: float = 1.0


@dataclass(frozen=True)
class Objective:
    """One metric of a multi-objective (Pareto) sweep and whether higher or lower is better."""

    metric: str
    mode: str


@dataclass(frozen=True)
class Tracking:
    report_to: str
    project: str
    mode: str = "auto"  # SwanLab mode: auto | cloud | local | offline (hypir_core.tracking.detect_swanlab_mode)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep spec. ``base`` is the resolved training config (base file + overrides)."""

    name: str
    source: str
    base_config: str
    base: Config
    overrides: tuple[str, ...]
    metric: str
    mode: str
    space: tuple[Param, ...]
    ties: dict[str, str]
    search: Search
    scheduler: Scheduler
    resources: Resources
    tracking: Tracking
    storage_path: str
    keep_top_k: int
    max_failures: int
    raw: dict = field(compare=False, repr=False)
    warnings: tuple[str, ...] = ()  # what is allowed but probably not meant; printed by --dry-run and at the start
    # Pareto sweeps: the metrics the study trades off. ``metric``/``mode`` stay the scalar the scheduler
    # stops on (and that ranks the leaderboard).
    objectives: tuple[Objective, ...] = ()

    @property
    def max_rounds(self) -> int:
        """Validation rounds in a full-budget trial (the last step always validates)."""
        return math.ceil(self.base.max_train_steps / self.base.validation_steps)

    @property
    def remote_storage(self) -> bool:
        return "://" in self.storage_path

    @property
    def sweep_dir(self) -> str:
        """Where Ray keeps this sweep (a local folder, or a URI on shared storage)."""
        return self.storage_path.rstrip("/") + "/" + self.name if self.remote_storage else os.path.join(
            self.storage_path, self.name)

    @property
    def local_dir(self) -> str:
        """A local folder for what cannot live on remote storage (the SQLite study when storage is s3://)."""
        return os.path.join("sweep_results", self.name) if self.remote_storage else self.sweep_dir

    @property
    def optuna_storage(self) -> str:
        return self.search.optuna_storage or "sqlite:///" + os.path.abspath(os.path.join(self.local_dir, "optuna.db"))

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        """Overrides that turn the base config into one trial's config: sampled params, then ties."""
        return param_overrides(params, self.ties)

    def trial_config(self, params: dict[str, Any], output_dir: str, name: str,
                     logging_dir: str | None = None) -> Config:
        """The complete training config of one trial, as ``launch.py --single`` would run it.

        ``logging_dir``: where its SwanLab run goes (the sweep's shared folder); default the base config's.
        """
        extra = [f"output_dir={output_dir}", f"checkpointing_steps={self.base.validation_steps}",
                 "checkpoints_total_limit=1", "resume_from_checkpoint=null",
                 f"report_to={self.tracking.report_to}", f"swanlab_project={self.tracking.project}",
                 f"swanlab_mode={self.tracking.mode}"]
        if logging_dir:
            extra.append(f"logging_dir={_yaml_value(logging_dir)}")
        return config_from_dict(config_to_dict(self.base), source=f"sweep spec {self.source}", name=name,
                                overrides=self.trial_overrides(params) + extra)


def param_overrides(params: dict[str, Any], ties: dict[str, str]) -> list[str]:
    """``key=value`` overrides for sampled params plus the keys tied to them (``coeff_t: model_t``)."""
    values = dict(params)
    for key, source in ties.items():
        values[key] = values[source]
    return [f"{key}={_yaml_value(value)}" for key, value in values.items()]


def spec_copy(spec: SweepSpec) -> dict:
    """What ``sweep_spec.yaml`` holds: the spec as written plus everything resolved from it (ties included)."""
    return {**spec.raw, "name": spec.name, "ties": dict(spec.ties),
            "points_resolved": [dict(p) for p in spec.search.points_to_evaluate],
            "base_resolved": config_to_dict(spec.base)}


def _yaml_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)  # repr round-trips a float exactly; YAML reads 1e-05 as a float too
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


# ---- reading ------------------------------------------------------------------------------------

class _Reader:
    """Checks values of one mapping of the spec, naming ``prefix.key`` and the file in every message."""

    def __init__(self, raw: Any, prefix: str, source: str, known: tuple[str, ...]):
        self.prefix, self.source = prefix, source
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            _fail(f"'{prefix or 'the top level'}' in {source} must be a mapping of keys, got {_show(raw)}.")
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean '{self.dotted(close[0])}'?" if close else f"allowed: {', '.join(known)}."
                _fail(f"Unknown key '{self.dotted(key)}' in {source}; {hint}")
        self.raw = raw

    def dotted(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else str(key)

    def bad(self, key: str, allowed: str, value: Any) -> NoReturn:
        _fail(f"'{self.dotted(key)}' in {self.source} must be {allowed}, got {_show(value)}.")

    def number(self, key: str, default=None, lo=None, hi=None, integer=False, lo_open=False):
        value = self.raw.get(key, default)
        if value is None and default is None and key not in self.raw:
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        kind = "an integer" if integer else "a number"
        allowed = kind + (f" {'>' if lo_open else '>='} {lo}" if lo is not None else "") + (
            f" and <= {hi}" if hi is not None else "")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.bad(key, allowed, value)
        if integer and not float(value).is_integer():
            self.bad(key, allowed, value)
        if lo is not None and (value <= lo if lo_open else value < lo) or hi is not None and value > hi:
            self.bad(key, allowed, value)
        return int(value) if integer else float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        if not isinstance(value, bool):
            self.bad(key, "true or false", value)
        return value

    def text(self, key: str, default=None, choices: tuple[str, ...] | None = None) -> str | None:
        value = self.raw.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value or choices and value not in choices:
            self.bad(key, f"one of {', '.join(choices)}" if choices else "a non-empty string", value)
        return value


def _relative_to(spec_path: Path, value: str) -> Path:
    """Config paths in a spec are relative to the spec file, or to the working folder if they exist there."""
    p = Path(value)
    if p.is_absolute() or p.exists():
        return p
    return Path(os.path.normpath(spec_path.parent / p))


def _as_override_list(raw: Any, source: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, dict):
        return tuple(f"{k}={_yaml_value(v)}" for k, v in _flatten(raw).items())
    if isinstance(raw, list) and all(isinstance(item, str) and "=" in item for item in raw):
        return tuple(raw)
    _fail(f"'overrides' in {source} must be a mapping of config keys (dotted keys allowed) or a list of "
          f"key=value strings, got {_show(raw)}.")


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _config_value(cfg: Config, dotted: str) -> Any:
    node: Any = config_to_dict(cfg)
    for part in dotted.split("."):
        node = node[part]
    return node


def _read_param(key: str, raw: Any, source: str, base: Config, prefix: str = "space") -> Param:
    if key in _TRIAL_OWNED:
        _fail(f"'{prefix}.{key}' in {source} cannot be searched: the sweep sets {key} itself; remove it from space.")
    r = _Reader(raw, f"{prefix}.{key}", source, ("type", "low", "high", "q", "values"))
    kind = r.text("type", choices=PARAM_TYPES)
    if kind is None:
        _fail(f"'{prefix}.{key}' in {source} needs a type: one of {', '.join(PARAM_TYPES)}, "
              f"e.g. {{type: loguniform, low: 0.05, high: 1.0}}.")
    if kind == "choice":
        values = raw.get("values")
        if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
            r.bad("values", "a non-empty list of distinct values", values)
        extra = set(raw) - {"type", "values"}
        if extra:
            _fail(f"'{prefix}.{key}' in {source} is a choice: give only 'values', not {', '.join(sorted(extra))}.")
        param = Param(key, kind, values=tuple(values))
    else:
        if "values" in raw:
            _fail(f"'{prefix}.{key}.values' in {source} is only for type: choice; use low and high for {kind}.")
        integer = kind == "int"
        low = r.number("low", integer=integer, lo=0 if kind == "loguniform" else None,
                       lo_open=kind == "loguniform")
        high = r.number("high", integer=integer)
        if low is None or high is None:
            _fail(f"'{prefix}.{key}' in {source} needs both low and high for type {kind}.")
        if not low < high:
            _fail(f"'{prefix}.{key}' in {source} needs low < high, got low {low:g} and high {high:g}.")
        q = r.number("q", integer=integer, lo=0, lo_open=True)
        if q is not None and kind == "loguniform":
            _fail(f"'{prefix}.{key}.q' in {source}: Optuna cannot quantize a log scale; use type: uniform with q, "
                  f"or drop q.")
        if q is not None and not (_multiple(low, q) and _multiple(high, q)):
            _fail(f"'{prefix}.{key}' in {source}: low and high must be multiples of q ({q:g}), got low {low:g} and "
                  f"high {high:g}.")
        param = Param(key, kind, low=low, high=high, q=q)
    # Every bound and choice must make a loadable training config: the trainer's own rules decide.
    probes = param.values if kind == "choice" else (param.low, param.high)
    for value in probes:
        try:
            config_from_dict(config_to_dict(base), source=f"sweep spec {source}",
                             overrides=[f"{key}={_yaml_value(value)}"])
        except ConfigError as exc:
            hint = " Use type: int for an integer key." if "must be an integer" in str(exc) and kind != "int" else ""
            _fail(f"'{prefix}.{key}' in {source} allows {value!r}, which the training config refuses: {exc}{hint}")
    current = _config_value(base, key)
    if isinstance(current, dict) or isinstance(current, list) and kind != "choice":
        _fail(f"'{prefix}.{key}' in {source} names a section of the training config; search one of its keys, "
              f"e.g. {prefix}.{key}.<key>.")
    return param


def _multiple(span: float, q: float) -> bool:
    return abs(span / q - round(span / q)) < 1e-6


def _read_points(raw: Any, spec_path: Path, source: str, space: tuple[Param, ...], base_overrides: tuple[str, ...],
                 ties: dict[str, str]) -> tuple[tuple[dict, ...], tuple[str, ...]]:
    """Warm-start points: training config files (their values of the space keys) or dicts of space keys."""
    if raw is None:
        return (), ()
    if not isinstance(raw, list):
        _fail(f"'search.points_to_evaluate' in {source} must be a list of config files or mappings of space keys, "
              f"got {_show(raw)}.")
    keys = [p.key for p in space]
    points, labels = [], []
    for index, item in enumerate(raw):
        where = f"'search.points_to_evaluate[{index}]' in {source}"
        if isinstance(item, str):
            path = _relative_to(spec_path, item)
            if not path.is_file():
                _fail(f"{where} names config file '{item}', which does not exist; give a path relative to the spec "
                      f"or the working folder.")
            # The spec's overrides apply to the warm-start configs too (same budget, same data).
            cfg = load_config(path, base_overrides)
            point, label = {k: _config_value(cfg, k) for k in keys}, path.stem
            for key, source_key in ties.items():
                if _config_value(cfg, key) != _config_value(cfg, source_key):
                    _fail(f"{where}: '{item}' sets {key} {_config_value(cfg, key)!r} but the spec ties it to "
                          f"{source_key} ({_config_value(cfg, source_key)!r}); drop the tie or the point.")
        elif isinstance(item, dict):
            unknown = [k for k in item if k not in keys]
            missing = [k for k in keys if k not in item]
            if unknown or missing:
                _fail(f"{where} must give exactly the space keys ({', '.join(keys)}); "
                      + (f"unknown: {', '.join(map(str, unknown))}" if unknown else f"missing: {', '.join(missing)}")
                      + ".")
            point, label = dict(item), f"point {index}"
        else:
            _fail(f"{where} must be a config file path or a mapping of space keys, got {_show(item)}.")
        for param in space:
            value = point[param.key]
            if param.type == "int" and isinstance(value, float) and value.is_integer():
                value = int(value)
            elif param.type in ("uniform", "loguniform") and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            point[param.key] = value
            if not param.contains(value):
                _fail(f"{where} ({label}) has {param.key} = {value!r}, outside the space ({param.describe()}); "
                      f"widen space.{param.key} or drop the point.")
        points.append(point)
        labels.append(label)
    return tuple(points), tuple(labels)


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a sweep spec; raise ``SpecError`` naming the key and the fix on any mistake."""
    spec_path, source = Path(path), str(path)
    try:
        raw = read_yaml(spec_path, "Sweep spec")
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    top = _Reader(raw, "", source, ("name", "base_config", "overrides", "metric", "mode", "objectives", "space",
                                    "ties", "search",
                                    "scheduler", "resources", "tracking", "storage_path", "keep_top_k",
                                    "max_failures"))
    name = top.text("name", default=spec_path.stem)
    if not _NAME.match(name):
        top.bad("name", "letters, digits, '_', '-' or '.' (at most 64, no spaces or slashes)", name)
    base_text = top.text("base_config")
    if base_text is None:
        _fail(f"'base_config' in {source} is required: the training config the sweep starts from, "
              f"e.g. base_config: ../configs/sd2_finetune_5k_improved.yaml.")
    base_path = _relative_to(spec_path, base_text)
    if not base_path.is_file():
        _fail(f"'base_config' in {source} names '{base_text}', which does not exist; give a path relative to the "
              f"spec or the working folder.")
    overrides = _as_override_list(raw.get("overrides"), source)
    base = load_config(base_path, overrides)

    metric = top.text("metric", default="val/Final_Score")
    types = base.data_config.val.degradation_types
    reported = {f"val/{m}" for m in ("PSNR", "SSIM", "LPIPS", "Final_Score")} | {
        f"val/{t}/{m}" for t in types for m in ("PSNR", "SSIM", "LPIPS")}
    if metric not in reported:
        top.bad("metric", f"a metric validation reports: val/Final_Score, val/PSNR, val/SSIM, val/LPIPS or "
                          f"val/<type>/PSNR|SSIM|LPIPS with a type of {', '.join(types)}", metric)
    mode = top.text("mode", default="min" if metric.endswith("LPIPS") else "max", choices=("max", "min"))
    objectives = _read_objectives(raw.get("objectives"), source, reported, types)

    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        _fail(f"'space' in {source} must map config keys to distributions, e.g. "
              f"space: {{lambda_gan: {{type: loguniform, low: 0.05, high: 1.0}}}}.")
    space = tuple(_read_param(str(k), v, source, base) for k, v in space_raw.items())
    keys = [p.key for p in space]

    ties_raw = raw.get("ties") or {}
    if not isinstance(ties_raw, dict) or not all(isinstance(v, str) for v in ties_raw.values()):
        _fail(f"'ties' in {source} must map a config key to the space key it follows, e.g. ties: {{coeff_t: model_t}}.")
    ties = {str(k): v for k, v in ties_raw.items()}
    coeff_overrides = [o.partition("=")[2].strip() for o in overrides if o.partition("=")[0].strip() == "coeff_t"]
    coeff_set = (yaml.safe_load(coeff_overrides[-1]) if coeff_overrides
                 else read_yaml(base_path).get("coeff_t")) is not None
    if "model_t" in keys and "coeff_t" not in keys and "coeff_t" not in ties and not coeff_set:
        ties["coeff_t"] = "model_t"  # the base leaves coeff_t null, which means "equal to model_t"
    for key, follows in ties.items():
        if follows not in keys:
            _fail(f"'ties.{key}' in {source} follows '{follows}', which is not in space; allowed: {', '.join(keys)}.")
        if key in keys:
            _fail(f"'ties.{key}' in {source}: {key} is searched in space as well; keep it in one place.")
        probe = next(p for p in space if p.key == follows)
        for value in (probe.values if probe.type == "choice" else (probe.low, probe.high)):
            try:
                config_from_dict(config_to_dict(base), source=f"sweep spec {source}",
                                 overrides=[f"{key}={_yaml_value(int(value) if probe.type == 'int' else value)}"])
            except ConfigError as exc:
                _fail(f"'ties.{key}' in {source} would set {key} to {value!r}, which the training config refuses: {exc}")

    s = _Reader(raw.get("search"), "search", source, ("algorithm", "seed", "num_samples", "max_concurrent_trials",
                                                      "points_to_evaluate", "optuna_storage", "n_startup_trials",
                                                      "multivariate", "constant_liar"))
    points, labels = _read_points(s.raw.get("points_to_evaluate"), spec_path, source, space, overrides, ties)
    num_samples = s.number("num_samples", default=16, lo=1, integer=True)
    if num_samples < len(points):
        s.bad("num_samples", f"at least the {len(points)} points_to_evaluate", num_samples)
    search = Search(algorithm=s.text("algorithm", default="optuna_tpe", choices=SEARCHERS),
                    seed=s.number("seed", default=0, lo=0, integer=True), num_samples=num_samples,
                    max_concurrent_trials=s.number("max_concurrent_trials", default=1, lo=1, integer=True),
                    points_to_evaluate=points, point_labels=labels,
                    optuna_storage=s.text("optuna_storage"),
                    n_startup_trials=s.number("n_startup_trials", default=4, lo=0, integer=True),
                    multivariate=s.flag("multivariate", default=False),
                    constant_liar=s.flag("constant_liar", default=False))

    rounds = math.ceil(base.max_train_steps / base.validation_steps)
    scheduler = _read_scheduler(raw.get("scheduler"), source, base, space, rounds)

    rs = _Reader(raw.get("resources"), "resources", source, ("gpu", "cpu"))
    gpu = rs.number("gpu", default=1, lo=0)
    if gpu > 1:
        _fail(f"'resources.gpu' in {source} is {gpu:g}, but a trial's trainer runs in one process on one GPU, so the "
              f"others would idle while counted; use gpu: 1, or a fraction such as 0.5 to share a GPU between trials.")
    resources = Resources(gpu=gpu, cpu=rs.number("cpu", default=1, lo=0, lo_open=True))

    tr = _Reader(raw.get("tracking"), "tracking", source, ("report_to", "project", "mode"))
    tracking = Tracking(report_to=tr.text("report_to", default=base.report_to, choices=("swanlab", "none")),
                        project=tr.text("project", default=base.swanlab_project),
                        mode=tr.text("mode", default=base.swanlab_mode, choices=SWANLAB_MODES))
    if tracking.report_to == "swanlab" and tracking.mode == "local" and not local_mode_available():
        tr.bad("mode", "auto, cloud or offline until SwanLab's dashboard is installed (pip install -e "
                       "'.[dashboard]')", "local")

    storage_path = top.text("storage_path", default="sweep_results")
    if scheduler.population_based and "://" in storage_path:
        top.bad("storage_path", f"a local or shared (NFS) folder for scheduler type {scheduler.type} (trials copy "
                                f"each other's checkpoints there)", storage_path)
    keep_top_k = top.number("keep_top_k", default=3, lo=0, integer=True)
    max_failures = top.number("max_failures", default=2, lo=0, integer=True)
    return SweepSpec(name=name, source=source, base_config=str(base_path), base=base, overrides=overrides,
                     metric=metric, mode=mode, space=space, ties=ties, search=search, scheduler=scheduler,
                     resources=resources, tracking=tracking, storage_path=storage_path, keep_top_k=keep_top_k,
                     max_failures=max_failures, raw=raw, objectives=objectives,
                     warnings=_zero_loss_warning(space, base, source) + _population_warning(scheduler, search))


def _population_warning(scheduler: Scheduler, search: Search) -> tuple[str, ...]:
    if scheduler.population_based and search.max_concurrent_trials < search.num_samples:
        return (f"{scheduler.type} compares a population that trains side by side; with max_concurrent_trials "
                f"{search.max_concurrent_trials} below the population of {search.num_samples}, trials wait and "
                f"exploit stale states. Raise it to {search.num_samples} (lower resources per trial to fit).",)
    return ()


def _read_scheduler(raw: Any, source: str, base: Config, space: tuple[Param, ...], rounds: int) -> Scheduler:
    sc = _Reader(raw, "scheduler", source, ("type", "grace_period", "reduction_factor", "min_samples_required",
                                            "perturbation_interval", "hyperparam_mutations", "quantile_fraction",
                                            "resample_probability", "synch"))
    kind = sc.text("type", default="asha", choices=SCHEDULERS)
    population = ("perturbation_interval", "hyperparam_mutations", "quantile_fraction", "resample_probability",
                  "synch")
    misplaced = [k for k in (population if kind not in POPULATION_BASED else ("grace_period", "reduction_factor",
                                                                             "min_samples_required")) if k in sc.raw]
    if misplaced:
        _fail(f"'scheduler.{misplaced[0]}' in {source} does not apply to scheduler type {kind}; remove it.")
    scheduler = Scheduler(type=kind, grace_period=sc.number("grace_period", default=1, lo=1, integer=True),
                          reduction_factor=sc.number("reduction_factor", default=2, lo=2, integer=True),
                          min_samples_required=sc.number("min_samples_required", default=3, lo=1, integer=True))
    if kind in ("asha", "median") and scheduler.grace_period > rounds:
        sc.bad("grace_period", f"at most the {rounds} validation rounds of a full trial (max_train_steps "
                               f"{base.max_train_steps} / validation_steps {base.validation_steps})",
               scheduler.grace_period)
    if kind not in POPULATION_BASED:
        return scheduler
    interval = sc.number("perturbation_interval", default=1, lo=1, integer=True)
    if interval >= rounds:
        sc.bad("perturbation_interval", f"fewer than the {rounds} validation rounds of a trial (so trials exploit "
                                        f"each other at least once)", interval)
    mutations_raw = sc.raw.get("hyperparam_mutations")
    if not isinstance(mutations_raw, dict) or not mutations_raw:
        _fail(f"'scheduler.hyperparam_mutations' in {source} must map the keys to mutate to distributions, e.g. "
              f"{{lr_G: {{type: loguniform, low: 1.0e-6, high: 1.0e-4}}}}.")
    mutations = []
    for key, value in mutations_raw.items():
        if key not in MUTABLE:
            _fail(f"'scheduler.hyperparam_mutations.{key}' in {source}: {key} cannot change during a trial; "
                  f"population-based training can mutate {', '.join(MUTABLE)}.")
        if key not in {p.key for p in space}:
            _fail(f"'scheduler.hyperparam_mutations.{key}' in {source} needs {key} in space too (it gives the "
                  f"population's starting values).")
        param = _read_param(key, value, source, base, prefix="scheduler.hyperparam_mutations")
        if kind == "pb2" and param.type == "choice":
            _fail(f"'scheduler.hyperparam_mutations.{key}' in {source}: pb2 models continuous values; give low and "
                  f"high, or use type: pbt.")
        mutations.append(param)
    return replace(scheduler, perturbation_interval=interval, hyperparam_mutations=tuple(mutations),
                   quantile_fraction=sc.number("quantile_fraction", default=0.25, lo=0, hi=0.5, lo_open=True),
                   resample_probability=sc.number("resample_probability", default=0.25, lo=0, hi=1),
                   synch=sc.flag("synch", default=False))


def _read_objectives(raw: Any, source: str, reported: set[str], types: list[str]) -> tuple[Objective, ...]:
    """``objectives: [{metric: val/PSNR, mode: max}, {metric: val/LPIPS, mode: min}]``: 2 or 3, distinct."""
    if raw is None:
        return ()
    example = "objectives: [{metric: val/PSNR, mode: max}, {metric: val/LPIPS, mode: min}]"
    if not isinstance(raw, list) or not 2 <= len(raw) <= 3:
        _fail(f"'objectives' in {source} must list 2 or 3 metrics to trade off, e.g. {example}; for one metric use "
              f"'metric' and 'mode'.")
    objectives = []
    for index, item in enumerate(raw):
        r = _Reader(item, f"objectives[{index}]", source, ("metric", "mode"))
        metric = r.text("metric")
        if metric not in reported:
            r.bad("metric", f"a metric validation reports: val/Final_Score, val/PSNR, val/SSIM, val/LPIPS or "
                            f"val/<type>/PSNR|SSIM|LPIPS with a type of {', '.join(types)}", metric)
        default = "min" if metric.endswith("LPIPS") else "max"
        objectives.append(Objective(metric, r.text("mode", default=default, choices=("max", "min"))))
    if len({o.metric for o in objectives}) != len(objectives):
        _fail(f"'objectives' in {source} names a metric twice; each objective must be a different metric.")
    return tuple(objectives)


def _zero_loss_warning(space: tuple[Param, ...], base: Config, source: str) -> tuple[str, ...]:
    """A space in which every loss weight can be 0 at once would propose configs that train nothing."""
    can_be_zero = []
    for key in LOSS_WEIGHTS:
        param = next((p for p in space if p.key == key), None)
        if param is None:
            if getattr(base, key) > 0:
                return ()
        elif param.type == "choice" and 0 not in param.values or param.type != "choice" and param.low > 0:
            return ()
        can_be_zero.append(key)
    return (f"In {source} every loss weight ({', '.join(can_be_zero)}) can be 0 at once; such a trial trains "
            f"nothing and ends as 'refused'. Raise a low bound above 0 or fix one weight in the base config.",)
