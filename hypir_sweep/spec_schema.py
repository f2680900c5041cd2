"""The sweep spec's keys, each declared once (type, default, allowed values, meaning); ``hypir_sweep.spec`` loads it.

The rules that need the base config or several keys at once (bounds the training config accepts, ties,
warm starts, rounds) are ``hypir_sweep.spec``'s named functions. Nothing here imports Ray.
"""

import dataclasses
import os
from typing import Annotated, Any, Optional, Union

import annotated_types as at
from pydantic import BeforeValidator, StringConstraints, WithJsonSchema, WrapValidator

from hypir_core.config import SWANLAB_MODES, Config, config_from_dict, config_to_dict
from hypir_core.schema import (Allowed, Choice, Derived, Flag, Int, Nested, Number, Text, Texts, key, nested, says,
                               section)

PARAM_TYPES = ("uniform", "loguniform", "int", "choice")
SCHEDULERS = ("asha", "moasha", "hyperband", "median", "fifo", "pbt", "pb2")
POPULATION_BASED = ("pbt", "pb2")
SEARCHERS = ("optuna_tpe",)
# Optional[...] keys below: null, or leaving the key out, means the default their meaning names.
_BOUND = Annotated[Any, WithJsonSchema({"type": "number"})]  # checked by type in hypir_sweep.spec.check_param


# What a key must be, as a whole sentence (for any mistake there, or for a missing key).
MUTATIONS = says("'{key}' in {where} must map the keys to mutate to distributions, e.g. {{lr_G: {{type: loguniform, "
                 "low: 1.0e-6, high: 1.0e-4}}}}.")
_NEEDS_TYPE = says("'{parent}' in {where} needs a type: one of " + ", ".join(PARAM_TYPES) + ", e.g. {{type: "
                   "loguniform, low: 0.05, high: 1.0}}.", missing_only=True)
_NEEDS_BASE_CONFIG = says("'{key}' in {where} is required: the training config the sweep starts from, e.g. "
                          "base_config: ../configs/sd2_finetune_5k_improved.yaml.", missing_only=True)
_SPACE = says("'{key}' in {where} must map config keys to distributions, e.g. space: {{lambda_gan: {{type: "
              "loguniform, low: 0.05, high: 1.0}}}}.")
_TIES = says("'{key}' in {where} must map a config key to the space key it follows, e.g. ties: {{coeff_t: model_t}}.")
_OBJECTIVES = says("'{key}' in {where} must list 2 or 3 metrics to trade off, e.g. objectives: [{{metric: val/PSNR, "
                   "mode: max}}, {{metric: val/LPIPS, mode: min}}]; for one metric use 'metric' and 'mode'.")


@section
class Param:
    """One searched config key: ``type`` uniform | loguniform | int | choice, bounds or values, ``q`` step."""

    type: Annotated[Choice(*PARAM_TYPES), _NEEDS_TYPE] = key(
        ..., "uniform, loguniform (log scale), int, or choice")
    low: Annotated[_BOUND, Allowed("a number (an integer for int, > 0 for loguniform)")] = key(
        None, "lowest value (uniform, loguniform, int)")
    high: Annotated[_BOUND, Allowed("a number above low (an integer for int)")] = key(None, "highest value")
    q: Annotated[_BOUND, Allowed("a number > 0 of which low and high are multiples (uniform, int)")] = key(
        None, "quantization step: values are low + a multiple of q")
    values: Annotated[Optional[list], Allowed("a non-empty list of distinct values")] = key(None, "the choices "
                                                                                                  "(choice)")
    # Last: from here on in this class, `key` names this field, not hypir_core.schema.key.
    key: Derived[str] = key("", "the dotted config key searched")

    def describe(self) -> str:
        """The distribution in a few words, as tables show it."""
        if self.type == "choice":
            return f"choice {list(self.values)}"
        step = f", step {self.q:g}" if self.q else ""
        return f"{self.type} [{self.low:g}, {self.high:g}]{step}"

    def contains(self, value: Any) -> bool:
        """Whether ``value`` can be drawn from this distribution."""
        if self.type == "choice":
            return value in self.values
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.type == "int" and not float(value).is_integer():
            return False
        return self.low - 1e-12 <= value <= self.high + 1e-12


def _keyed(value: Any, handler) -> tuple[Param, ...]:
    if isinstance(value, tuple):
        return value  # resolved already (dataclasses.replace)
    return tuple(dataclasses.replace(param, key=str(name)) for name, param in handler(value).items())


# Written as a mapping {config key: distribution}; kept as a tuple of Params that know their key.
Distributions = Annotated[dict[str, Param], WrapValidator(_keyed)]


# Warm-start points as written; load_spec replaces them by their values of the space keys (dicts).
WarmStarts = Annotated[list[Annotated[Union[str, dict], Allowed("a config file path or a mapping of space keys")]],
                       BeforeValidator(lambda v: [] if v is None else v),
                       Allowed("a list of config files or mappings of space keys")]


@section
class Objective:
    """One metric of a multi-objective (Pareto) sweep and whether higher or lower is better."""

    metric: Optional[Text()] = key(None, "a metric validation reports: val/PSNR, val/LPIPS, val/<type>/SSIM, ...")
    mode: Optional[Choice("max", "min")] = key(None, "max or min (default: min for LPIPS, else max)")


@section
class Search:
    """How the next configs are proposed."""

    algorithm: Choice(*SEARCHERS) = key("optuna_tpe", "Optuna's TPE")
    seed: Int(ge=0) = key(0, "the searcher's seed: the same seed proposes the same configs")
    num_samples: Int(ge=1) = key(16, "trials in the sweep, warm-start points included (the population for pbt)")
    max_concurrent_trials: Int(ge=1) = key(1, "trials training at once")
    points_to_evaluate: WarmStarts = key([], "run first: training config files (their values of the space keys, "
                                             "relative to the spec) or mappings of space keys")
    optuna_storage: Optional[Text()] = key(None, "an Optuna storage URL (default: SQLite, optuna.db in the sweep's "
                                                 "folder)")
    # Optuna's 10 made 8-12 trial sweeps random search (bench/search.py).
    n_startup_trials: Int(ge=0) = key(4, "TPE: random draws before it models (warm-start points count)")
    # Both on: at half the grid's compute the mean regret fell from 0.437 to 0.203 over 40 search seeds
    # (bench/search.py, BENCHMARKS.md "Sampler settings").
    multivariate: Flag() = key(True, "TPE: one joint model of all parameters")
    constant_liar: Flag() = key(True, "TPE: running trials count as bad, so parallel proposals spread out")
    warm_start: Texts(empty_ok=True, allowed="a list of earlier sweeps' folders") = key(
        [], "earlier sweeps' folders (relative to the spec) whose ended trials the sampler starts from, where "
            "they fit this space")
    learn_from_failures: Flag() = key(True, "TPE: configs near ones that diverged, ran out of memory or were "
                                            "refused are proposed less (the study still says FAIL)")
    point_labels: Derived[tuple[str, ...]] = key((), "each warm-start point's name (its file's, or 'point <i>')")


@section
class Scheduler:
    """Early stopping, or population-based training; times are the trial's validation rounds."""

    type: Choice(*SCHEDULERS) = key("asha", "asha, moasha (by the objectives' front; the default with objectives), "
                                            "hyperband, median or fifo (no stopping); pbt or pb2 train a population")
    grace_period: Int(ge=1) = key(1, "asha, moasha, median: rounds a trial trains before it can be stopped")
    reduction_factor: Int(ge=2) = key(2, "asha, moasha, hyperband: 1 in this many trials goes on at each rung")
    min_samples_required: Int(ge=1) = key(3, "median: trials reporting a round before the median stops any")
    perturbation_interval: Int(ge=1) = key(1, "pbt, pb2: rounds between exploits")
    hyperparam_mutations: Annotated[Nested[Distributions], Allowed("mutable config keys, each mapped to a "
                                                                   "distribution"), MUTATIONS] = nested(
        "pbt, pb2: keys that change mid-run (each also in space), with their distributions")
    quantile_fraction: Number(gt=0, le=0.5) = key(0.25, "pbt, pb2: the weakest fraction copies the strongest")
    resample_probability: Number(ge=0, le=1) = key(0.25, "pbt: draw afresh instead of perturbing by 0.8 or 1.2")
    synch: Flag() = key(False, "pbt, pb2: the population waits at each perturbation and is ranked at one round")

    @property
    def population_based(self) -> bool:
        """Population-based training (pbt, pb2) rather than early stopping."""
        return self.type in POPULATION_BASED


@section
class Resources:
    """What one trial gets."""

    gpu: Number(ge=0) = key(1.0, "GPUs per trial: 1, a fraction such as 0.5 to share one, or 0 for the CPU")
    cpu: Number(gt=0) = key(1.0, "CPUs per trial")


@section
class Tracking:
    """Where trials log; each key defaults to the base config's."""

    report_to: Optional[Choice("swanlab", "tensorboard", "none")] = key(
        None, "the tracker (default: the base config's report_to; tensorboard: a subfolder per trial)")
    project: Optional[Text()] = key(None, "SwanLab project (default: the base config's swanlab_project)")
    mode: Optional[Choice(*SWANLAB_MODES)] = key(None, "auto, cloud, local or offline (default: the base config's "
                                                       "swanlab_mode)")


@section
class Confirm:
    """Finalists re-run with new seeds once the search has ended (hypir_sweep.confirm)."""

    top: Int(ge=0) = key(0, "the best full-budget configs re-run after the search (0: none; launch.py --confirm "
                            "uses 3 then)")
    seeds: Int(ge=1) = key(2, "new seeds per finalist: the base config's seed + 1, + 2, ... (its search trial "
                              "counts as one more)")


def _two_or_three(value: Any) -> Any:
    if value is None or value == ():
        return ()  # not a Pareto sweep (an empty list written in a file is refused)
    if isinstance(value, (list, tuple)) and 2 <= len(value) <= 3:
        return value
    raise ValueError("2 or 3 objectives")


# Written as a mapping (nested or dotted keys) or as key=value texts; load_spec makes them dotted keys and values.
Overrides = Annotated[Nested[Union[dict, list[Annotated[str, StringConstraints(pattern="=")]]]],
                      Allowed("a mapping of config keys (dotted keys allowed) or a list of key=value strings")]
SweepName = Text(allowed="letters, digits, '_', '-' or '.' (at most 64, no spaces or slashes)",
                 pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@section
class SweepSpec:
    """A sweep spec; as ``load_spec`` returns it, with ``base`` the resolved training config."""

    name: Optional[SweepName] = key(None, "the sweep's folder name (default: the spec file's name)")
    base_config: Annotated[Text(), _NEEDS_BASE_CONFIG] = key(
        ..., "the training config the sweep starts from, relative to the spec")
    overrides: Overrides = key({}, "config keys set in the base config for every trial (and warm start)")
    metric: Text() = key("val/Final_Score", "what early stopping and the leaderboard rank by: val/Final_Score, "
                                            "val/PSNR, val/<type>/LPIPS, ...")
    mode: Optional[Choice("max", "min")] = key(None, "max or min (default: min for LPIPS, else max)")
    objectives: Annotated[tuple[Objective, ...], BeforeValidator(_two_or_three), Allowed(
        "a list of 2 or 3 {metric, mode}"), _OBJECTIVES] = key(
        (), "Pareto sweeps: 2 or 3 metrics the study trades off")
    space: Annotated[Distributions, at.MinLen(1), Allowed("config keys, each mapped to a distribution"),
                     _SPACE] = key(..., "dotted config keys and the distributions they are drawn from")
    ties: Annotated[Nested[dict[str, str]], Allowed("config keys, each mapped to a space key"),
                    _TIES] = key({}, "config keys that take a space key's sampled value (coeff_t: "
                                                    "model_t)")
    search: Nested[Search] = nested("how the next configs are proposed")
    scheduler: Nested[Scheduler] = nested("early stopping or population-based training")
    confirm: Nested[Confirm] = nested("finalists re-run with new seeds after the search, as trials of the sweep")
    resources: Nested[Resources] = nested("what one trial gets")
    tracking: Nested[Tracking] = nested("where trials log")
    storage_path: Text() = key("sweep_results", "where sweeps are kept: a folder, shared storage or s3://bucket/path")
    keep_top_k: Int(ge=0) = key(3, "HYPIR weights kept for this many best trials only")
    max_failures: Int(ge=0) = key(2, "retries of a crashed trial, each from its last round")
    source: Derived[str] = key("", "the spec file, for messages")
    base: Derived[Optional[Config]] = key(None, "the resolved training config (base file + overrides)")
    raw: Derived[dict] = dataclasses.field(default_factory=dict, compare=False, repr=False)  # the file as written
    # What is allowed but probably not meant; printed by --dry-run and at the start.
    warnings: Derived[tuple[str, ...]] = key((), "")

    @property
    def max_rounds(self) -> int:
        """Validation rounds in a full-budget trial (the last step always validates)."""
        return self.base.validation_rounds

    @property
    def confirm_trials(self) -> int:
        """The most confirmation trials the sweep runs after its search (finalists times new seeds)."""
        return self.confirm.top * self.confirm.seeds

    @property
    def remote_storage(self) -> bool:
        """Whether the sweep lives on object storage (s3://, gs://) rather than in a folder."""
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
        """The study's storage URL: the spec's, or SQLite in the sweep's local folder."""
        return self.search.optuna_storage or "sqlite:///" + os.path.abspath(os.path.join(self.local_dir, "optuna.db"))

    def trial_config(self, params: dict[str, Any], output_dir: str, name: str,
                     logging_dir: str | None = None) -> Config:
        """The complete training config of one trial (sampled values and ties on the base), as ``launch.py
        --single`` would run it. ``logging_dir``: where its SwanLab run goes (default the base config's)."""
        values = {**trial_values(params, self.ties), "output_dir": output_dir,
                  "checkpointing_steps": self.base.validation_steps, "checkpoints_total_limit": 1,
                  "resume_from_checkpoint": None, "report_to": self.tracking.report_to,
                  "swanlab_project": self.tracking.project, "swanlab_mode": self.tracking.mode}
        if logging_dir:
            values["logging_dir"] = logging_dir
        return config_from_dict(config_to_dict(self.base), source=f"sweep spec {self.source}", name=name,
                                overrides=values)


def trial_values(params: dict[str, Any], ties: dict[str, str]) -> dict[str, Any]:
    """Sampled values plus the keys tied to them (``coeff_t: model_t``), as dotted config keys."""
    return {**params, **{tied: params[follows] for tied, follows in ties.items()}}
