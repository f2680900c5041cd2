"""Sweep specs: a YAML file naming a base training config, a search space and how to search it.

``load_spec(path)`` validates the whole file up front; every mistake is a ``SpecError`` with one
sentence naming the key, the file, the bad value and what is allowed. The keys are declared in
``hypir_sweep.spec_schema``; the rules below join them with the base config. Space keys are dotted
training-config keys (``lambda_gan``, ``opt_kwargs.weight_decay``); each bound and choice is checked
against the training config's own rules, so a sweep cannot propose a config that fails to load.
Nothing here imports Ray.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from hypir_core.config import LOSS_WEIGHTS, Config, config_from_dict, config_to_dict, load_config, parse_override
from hypir_core.config import read_yaml
from hypir_core.config_data import has_validation, reported_types
from hypir_core.config_degradation import is_degradation_setting
from hypir_core.errors import ConfigError
from hypir_core.schedule import MUTABLE, flatten, read
from hypir_core.schema import Int, Number, Source, check, validate
from hypir_core.tracking import local_mode_available
from hypir_sweep.spec_schema import (PARAM_TYPES, POPULATION_BASED, SCHEDULERS, SEARCHERS,  # noqa: F401 (re-exported)
                                     Confirm, Objective, Param, Resources, Scheduler, Search, SweepSpec,
                                     Tracking, MUTATIONS, trial_values)

SPEC_COPY = "sweep_spec.yaml"  # the copy of the spec a sweep keeps in its folder (what --resume and analyze.py read)
# Keys a sweep sets itself in every trial: a space must not search them.
_TRIAL_OWNED = ("output_dir", "resume_from_checkpoint", "checkpointing_steps", "checkpoints_total_limit",
                "validation_steps", "max_train_steps", "report_to", "swanlab_project", "swanlab_mode", "logging_dir")


class SpecError(ConfigError):
    """A sweep spec key, type or value is not allowed."""


def spec_copy(spec: SweepSpec) -> dict:
    """What ``sweep_spec.yaml`` holds: the spec as written plus everything resolved from it (ties included)."""
    return {**spec.raw, "name": spec.name, "ties": dict(spec.ties), "scheduler_type": spec.scheduler.type,
            "points_resolved": [dict(p) for p in spec.search.points_to_evaluate],
            "base_resolved": config_to_dict(spec.base)}


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a sweep spec; raise ``SpecError`` naming the key and the fix on any mistake."""
    spec_path, source = Path(path), Source(str(path), error=SpecError)
    try:
        raw = read_yaml(spec_path, "Sweep spec")
    except ConfigError as exc:
        raise SpecError(str(exc)) from None
    if not isinstance(raw, dict):
        source.must_be("the top level", "a mapping of keys", raw)
    written = validate(SweepSpec, raw, source)
    base_path = _relative_to(spec_path, written.base_config)
    if not base_path.is_file():
        source.fail(f"'base_config' in {source.name} names '{written.base_config}', which does not exist; give a path "
                    f"relative to the spec or the working folder.")
    overrides = override_values(written.overrides, str(base_path))
    base = load_config(base_path, overrides)
    check_validation(base, base_path, source)
    metric = check_metric("metric", written.metric, base, source)
    objectives = check_objectives(written.objectives, base, source)
    space = tuple(check_param(param, source, base) for param in written.space)
    ties = check_ties(written.ties, space, overrides, base_path, base, source)
    check_validation_set_fixed([p.key for p in space] + list(ties), base, base_path, source)
    points, labels = warm_start_points(written.search.points_to_evaluate, spec_path, source, space, overrides, ties)
    if written.search.num_samples < len(points):
        source.must_be("search.num_samples", f"at least the {len(points)} points_to_evaluate",
                       written.search.num_samples)
    search = dataclasses.replace(written.search, points_to_evaluate=list(points), point_labels=labels,
                                 warm_start=[str(_relative_to(spec_path, p)) for p in written.search.warm_start])
    scheduler = check_scheduler(written.scheduler, raw.get("scheduler") or {}, source, base, space, objectives)
    tracking = check_tracking(written.tracking, base, source)
    spec = dataclasses.replace(
        written, name=written.name or spec_path.stem, source=str(path), base_config=str(base_path), base=base,
        overrides=overrides, metric=metric, mode=written.mode or _default_mode(metric), objectives=objectives,
        space=space, ties=ties, search=search, scheduler=scheduler, tracking=tracking, raw=raw)
    check_resources(spec.resources, source)
    check_confirm(spec, source)
    if spec.scheduler.population_based and spec.remote_storage:
        source.must_be("storage_path", f"a local or shared (NFS) folder for scheduler type {spec.scheduler.type} "
                                       f"(trials copy each other's checkpoints there)", spec.storage_path)
    return dataclasses.replace(spec, warnings=_zero_loss_warning(spec) + _population_warning(spec)
                               + _range_ends_warning(spec))


# ---- rules across keys (each names the key it refuses) ----

def _relative_to(spec_path: Path, value: str) -> Path:
    """Config paths in a spec are relative to the spec file, or to the working folder if they exist there."""
    p = Path(value)
    if p.is_absolute() or p.exists():
        return p
    return Path(os.path.normpath(spec_path.parent / p))


def override_values(overrides: dict | list[str], base_source: str) -> dict[str, Any]:
    """The spec's overrides as dotted keys and values: a nested mapping flattened, or key=value texts parsed."""
    if isinstance(overrides, list):
        return dict(parse_override(text, base_source) for text in overrides)
    flat = {}
    for dotted, value in overrides.items():
        flat.update({f"{dotted}.{k}": v for k, v in flatten(value).items()} if isinstance(value, dict) and value
                    else {dotted: value})
    return flat


def _default_mode(metric: str) -> str:
    return "min" if metric.endswith("LPIPS") else "max"


def check_validation(base: Config, base_path: Path, source: Source) -> None:
    """Trials are ranked and stopped by their validation scores: the base config must name a validation set."""
    if not has_validation(base.data_config.val):
        source.fail(f"'base_config' in {source.name} names '{base_path}', which has no validation set, so no trial "
                    f"would ever report a score to rank or stop it by; set data_config.val.val_dir (LQ/GT pairs) or "
                    f"data_config.val.hq_dir (HQ images, degraded once) there or in the spec's overrides.")


def check_validation_set_fixed(keys: list[str], base: Config, base_path: Path, source: Source) -> None:
    """Trials that sample a degradation setting are comparable only when they are scored on one validation set."""
    changed = next((k for k in keys if is_degradation_setting(k)), None)
    if changed is not None and base.data_config.val.degradation_from_train:
        source.fail(f"'{changed}' in {source.name} changes the training degradation from trial to trial, but "
                    f"'{base_path}' degrades its validation images with the training settings "
                    f"(data_config.val.degradation: train), so trials would not be scored on one set; give "
                    f"data_config.val.degradation its own mapping (e.g. {{noise_range: [1, 30]}}) there or in the "
                    f"spec's overrides.")


def check_metric(key: str, metric: Any, base: Config, source: Source) -> str:
    """A metric validation reports, per degradation type too."""
    types = reported_types(base.data_config.val)
    reported = {f"val/{m}" for m in ("PSNR", "SSIM", "LPIPS", "Final_Score")} | {
        f"val/{t}/{m}" for t in types for m in ("PSNR", "SSIM", "LPIPS")}
    if metric not in reported:
        source.must_be(key, f"a metric validation reports: val/Final_Score, val/PSNR, val/SSIM, val/LPIPS or "
                            f"val/<type>/PSNR|SSIM|LPIPS with a type of {', '.join(types)}", metric)
    return metric


def check_objectives(objectives: tuple[Objective, ...], base: Config, source: Source) -> tuple[Objective, ...]:
    """Pareto sweeps: each objective a reported metric, each a different one; mode by metric where not given."""
    objectives = tuple(dataclasses.replace(o, metric=check_metric(f"objectives[{i}].metric", o.metric, base, source),
                                           mode=o.mode or _default_mode(o.metric)) for i, o in enumerate(objectives))
    if len({o.metric for o in objectives}) != len(objectives):
        source.fail(f"'objectives' in {source.name} names a metric twice; each objective must be a different metric.")
    return objectives


def check_param(param: Param, source: Source, base: Config, prefix: str = "space") -> Param:
    """Bounds of the type's kind, low < high, q dividing them, and every bound or choice a config that loads."""
    where, name = f"'{prefix}.{param.key}' in {source.name}", f"{prefix}.{param.key}"
    if param.key in _TRIAL_OWNED:
        source.fail(f"{where} cannot be searched: the sweep sets {param.key} itself; remove it from space.")
    if param.type == "choice":
        values = param.values
        if not isinstance(values, list) or not values or len(set(map(repr, values))) != len(values):
            source.must_be(f"{name}.values", "a non-empty list of distinct values", values)
        extra = [k for k in ("low", "high", "q") if getattr(param, k) is not None]
        if extra:
            source.fail(f"{where} is a choice: give only 'values', not {', '.join(extra)}.")
        probes = values
    else:
        if param.values is not None:
            source.fail(f"'{name}.values' in {source.name} is only for type: choice; use low and high for "
                        f"{param.type}.")
        bound = Int() if param.type == "int" else Number(gt=0) if param.type == "loguniform" else Number()
        low = None if param.low is None else check(bound, param.low, f"{name}.low", source)
        high = None if param.high is None else check(Int() if param.type == "int" else Number(), param.high,
                                                     f"{name}.high", source)
        if low is None or high is None:
            source.fail(f"{where} needs both low and high for type {param.type}.")
        if not low < high:
            source.fail(f"{where} needs low < high, got low {low:g} and high {high:g}.")
        q = None if param.q is None else check(Int(gt=0) if param.type == "int" else Number(gt=0), param.q,
                                               f"{name}.q", source)
        if q is not None and param.type == "loguniform":
            source.fail(f"'{name}.q' in {source.name}: Optuna cannot quantize a log scale; use type: uniform with q, "
                        f"or drop q.")
        if q is not None and not (_multiple(low, q) and _multiple(high, q)):
            source.fail(f"{where}: low and high must be multiples of q ({q:g}), got low {low:g} and high {high:g}.")
        param, probes = dataclasses.replace(param, low=low, high=high, q=q), (low, high)
    # Every bound and choice must make a loadable training config: the trainer's own rules decide.
    for value in probes:
        if refusal := _refusal(base, param.key, value, source):
            integer = "must be an integer" in refusal and param.type != "int"
            hint = " Use type: int for an integer key." if integer else ""
            if param.type != "choice" and _holds_list(base, param.key):
                hint = f" To search a list, search one of its elements, e.g. {name}.1 (a range's upper end)."
            source.fail(f"{where} allows {value!r}, which the training config refuses: {refusal}{hint}")
    if dataclasses.is_dataclass(read(base, param.key)):
        source.fail(f"{where} names a section of the training config; search one of its keys, e.g. "
                    f"{name}.<key>.")
    return param


def _holds_list(base: Config, dotted: str) -> bool:
    try:
        return isinstance(read(base, dotted), list)
    except (AttributeError, IndexError):  # not a key of the config: the refusal says so
        return False


def _multiple(span: float, q: float) -> bool:
    return abs(span / q - round(span / q)) < 1e-6


def _refusal(base: Config, dotted: str, value: Any, source: Source) -> str | None:
    """Why the training config refuses ``dotted: value`` on the base config (None if it loads)."""
    try:
        config_from_dict(config_to_dict(base), source=f"sweep spec {source.name}", overrides={dotted: value})
    except ConfigError as exc:
        return str(exc)


def check_ties(ties: dict[str, str], space: tuple[Param, ...], overrides: dict, base_path: Path, base: Config,
               source: Source) -> dict[str, str]:
    """Each tie follows a space key the config accepts; model_t drags coeff_t along when the base leaves it null."""
    keys, ties = [p.key for p in space], dict(ties)
    coeff_set = overrides.get("coeff_t", read_yaml(base_path).get("coeff_t")) is not None
    if "model_t" in keys and "coeff_t" not in keys and "coeff_t" not in ties and not coeff_set:
        ties["coeff_t"] = "model_t"  # the base leaves coeff_t null, which means "equal to model_t"
    for tied, follows in ties.items():
        if follows not in keys:
            source.fail(f"'ties.{tied}' in {source.name} follows '{follows}', which is not in space; allowed: "
                        f"{', '.join(keys)}.")
        if tied in keys:
            source.fail(f"'ties.{tied}' in {source.name}: {tied} is searched in space as well; keep it in one place.")
        probe = next(p for p in space if p.key == follows)
        for value in (probe.values if probe.type == "choice" else (probe.low, probe.high)):
            if refusal := _refusal(base, tied, int(value) if probe.type == "int" else value, source):
                source.fail(f"'ties.{tied}' in {source.name} would set {tied} to {value!r}, which the training config "
                            f"refuses: {refusal}")
    return ties


def warm_start_points(raw: list, spec_path: Path, source: Source, space: tuple[Param, ...], overrides: dict,
                      ties: dict[str, str]) -> tuple[tuple[dict, ...], tuple[str, ...]]:
    """Warm-start points: training config files (their values of the space keys) or dicts of space keys."""
    keys = [p.key for p in space]
    points, labels = [], []
    for index, item in enumerate(raw):
        where = f"'search.points_to_evaluate[{index}]' in {source.name}"
        if isinstance(item, str):
            path = _relative_to(spec_path, item)
            if not path.is_file():
                source.fail(f"{where} names config file '{item}', which does not exist; give a path relative to the "
                            f"spec or the working folder.")
            # The spec's overrides apply to the warm-start configs too (same budget, same data).
            cfg = load_config(path, overrides)
            point, label = {k: read(cfg, k) for k in keys}, path.stem
            for tied, follows in ties.items():
                if read(cfg, tied) != read(cfg, follows):
                    source.fail(f"{where}: '{item}' sets {tied} {read(cfg, tied)!r} but the spec ties it to "
                                f"{follows} ({read(cfg, follows)!r}); drop the tie or the point.")
        else:
            unknown, missing = [k for k in item if k not in keys], [k for k in keys if k not in item]
            if unknown or missing:
                source.fail(f"{where} must give exactly the space keys ({', '.join(keys)}); "
                            + (f"unknown: {', '.join(map(str, unknown))}" if unknown else
                               f"missing: {', '.join(missing)}") + ".")
            point, label = dict(item), f"point {index}"
        for param in space:
            value = point[param.key]
            if param.type == "int" and isinstance(value, float) and value.is_integer():
                value = int(value)
            elif param.type in ("uniform", "loguniform") and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            point[param.key] = value
            if not param.contains(value):
                source.fail(f"{where} ({label}) has {param.key} = {value!r}, outside the space ({param.describe()}); "
                            f"widen space.{param.key} or drop the point.")
        points.append(point)
        labels.append(label)
    return tuple(points), tuple(labels)


def check_scheduler(scheduler: Scheduler, written: dict, source: Source, base: Config,
                    space: tuple[Param, ...], objectives: tuple[Objective, ...] = ()) -> Scheduler:
    """Keys of its type only, times within a trial's rounds, and mutations a trial can take mid-run. A Pareto sweep
    (objectives) stops by the front (moasha) unless the spec names another type."""
    if objectives and "type" not in written:
        scheduler = dataclasses.replace(scheduler, type="moasha")
    if scheduler.type == "moasha" and not objectives:
        source.fail(f"'scheduler.type' in {source.name} is moasha, which stops trials by the front of several "
                    f"objectives, but the spec has none: add objectives (2-3 metrics), or use type asha.")
    kind, rounds, population = scheduler.type, base.validation_rounds, scheduler.population_based
    misplaced = [k for k in (("grace_period", "reduction_factor", "min_samples_required") if population else
                             ("perturbation_interval", "hyperparam_mutations", "quantile_fraction",
                              "resample_probability", "synch")) if k in written]
    if misplaced:
        source.fail(f"'scheduler.{misplaced[0]}' in {source.name} does not apply to scheduler type {kind}; remove it.")
    if kind in ("asha", "moasha", "median") and scheduler.grace_period > rounds:
        source.must_be("scheduler.grace_period", f"at most the {rounds} validation rounds of a full trial "
                                                 f"(max_train_steps {base.max_train_steps} / validation_steps "
                                                 f"{base.validation_steps})", scheduler.grace_period)
    if not population:
        return scheduler
    if scheduler.perturbation_interval >= rounds:
        source.must_be("scheduler.perturbation_interval", f"fewer than the {rounds} validation rounds of a trial (so "
                                                          f"trials exploit each other at least once)",
                       scheduler.perturbation_interval)
    if not scheduler.hyperparam_mutations:
        source.fail(MUTATIONS.render("scheduler.hyperparam_mutations", source.where))
    for param in scheduler.hyperparam_mutations:
        where = f"'scheduler.hyperparam_mutations.{param.key}' in {source.name}"
        if param.key not in MUTABLE:
            source.fail(f"{where}: {param.key} cannot change during a trial; population-based training can mutate "
                        f"{', '.join(MUTABLE)}.")
        if param.key not in {p.key for p in space}:
            source.fail(f"{where} needs {param.key} in space too (it gives the population's starting values).")
        if kind == "pb2" and param.type == "choice":
            source.fail(f"{where}: pb2 models continuous values; give low and high, or use type: pbt.")
    return dataclasses.replace(scheduler, hyperparam_mutations=tuple(
        check_param(p, source, base, prefix="scheduler.hyperparam_mutations") for p in scheduler.hyperparam_mutations))


def check_resources(resources: Resources, source: Source) -> None:
    """A trial's trainer uses at most one GPU."""
    if resources.gpu > 1:
        source.fail(f"'resources.gpu' in {source.name} is {resources.gpu:g}, but a trial's trainer runs in one process "
                    f"on one GPU, so the others would idle while counted; use gpu: 1, or a fraction such as 0.5 to "
                    f"share a GPU between trials.")


def check_confirm(spec: SweepSpec, source: Source) -> None:
    """Finalists are confirmed over the seed key, ranked by one metric, after a search that has one."""
    if not spec.confirm.top:
        return
    if spec.scheduler.population_based:
        source.fail(f"'confirm' in {source.name} re-runs a search's finalists; population-based training "
                    f"({spec.scheduler.type}) has none: remove confirm or use scheduler type asha.")
    if spec.objectives:
        source.fail(f"'confirm' in {source.name} ranks finalists by one metric; a Pareto sweep (objectives) has a "
                    f"front instead: remove confirm, or pick a point with analyze.py --pick.")
    if "seed" in {p.key for p in spec.space} | set(spec.ties):
        source.fail(f"'confirm' in {source.name} re-runs finalists with new seeds, so 'seed' cannot be searched too; "
                    f"remove seed from space (or ties), or remove confirm.")


def check_tracking(tracking: Tracking, base: Config, source: Source) -> Tracking:
    """The base config's tracking where the spec says nothing; local mode only with the dashboard installed."""
    tracking = dataclasses.replace(tracking, report_to=tracking.report_to or base.report_to,
                                   project=tracking.project or base.swanlab_project,
                                   mode=tracking.mode or base.swanlab_mode)
    if tracking.report_to == "swanlab" and tracking.mode == "local" and not local_mode_available():
        source.must_be("tracking.mode", "auto, cloud or offline until SwanLab's dashboard is installed (pip install -e "
                                        "'.[dashboard]')", "local")
    return tracking


def _population_warning(spec: SweepSpec) -> tuple[str, ...]:
    scheduler, search = spec.scheduler, spec.search
    if scheduler.population_based and search.max_concurrent_trials < search.num_samples:
        return (f"{scheduler.type} compares a population that trains side by side; with max_concurrent_trials "
                f"{search.max_concurrent_trials} below the population of {search.num_samples}, trials wait and "
                f"exploit stale states. Raise it to {search.num_samples} (lower resources per trial to fit).",)
    return ()


def _range_ends_warning(spec: SweepSpec) -> tuple[str, ...]:
    """Both ends of one range searched where low can be drawn above high: such trials would be refused."""
    ends = {p.key: p for p in spec.space if p.type != "choice" and p.key.endswith((".0", ".1"))}
    warnings = []
    for key, low in ends.items():
        high = ends.get(key[:-1] + "1") if key.endswith(".0") else None
        if high is not None and low.high > high.low:
            warnings.append(f"In {spec.source} {key} (up to {low.high:g}) can be drawn above {high.key} (from "
                            f"{high.low:g}); such a trial's range has low > high and ends as 'refused'. Keep the "
                            f"two spans apart.")
    return tuple(warnings)


def _zero_loss_warning(spec: SweepSpec) -> tuple[str, ...]:
    """A space in which every loss weight can be 0 at once would propose configs that train nothing."""
    can_be_zero = []
    for key in LOSS_WEIGHTS:
        param = next((p for p in spec.space if p.key == key), None)
        if param is None:
            if getattr(spec.base, key) > 0:
                return ()
        elif param.type == "choice" and 0 not in param.values or param.type != "choice" and param.low > 0:
            return ()
        can_be_zero.append(key)
    return (f"In {spec.source} every loss weight ({', '.join(can_be_zero)}) can be 0 at once; such a trial trains "
            f"nothing and ends as 'refused'. Raise a low bound above 0 or fix one weight in the base config.",)
