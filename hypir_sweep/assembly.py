"""The only place where Ray Tune's search space, Optuna's sampler and searcher and the early-stopping
scheduler are built from a spec (the sweep, its dry run and the search benchmark all use these)."""

from __future__ import annotations

import os
import warnings
from typing import Any

from hypir_sweep.spec import SweepSpec


def domain(p):
    """One spec parameter as a Ray Tune domain."""
    from ray import tune

    if p.type == "choice":
        return tune.choice(list(p.values))
    if p.type == "int":
        return tune.qrandint(int(p.low), int(p.high), int(p.q or 1))
    if p.type == "loguniform":
        return tune.loguniform(p.low, p.high)
    return tune.quniform(p.low, p.high, p.q) if p.q else tune.uniform(p.low, p.high)


def tune_space(spec: SweepSpec) -> dict[str, Any]:
    """The spec's space as Ray Tune domains (OptunaSearch turns them into Optuna distributions)."""
    return {p.key: domain(p) for p in spec.space}


def optuna_distributions(spec: SweepSpec) -> dict[str, Any]:
    """The same space as Optuna distributions, converted by Ray's own OptunaSearch code."""
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch.convert_search_space(tune_space(spec))


def make_scheduler(spec: SweepSpec):
    """ASHA, multi-objective ASHA (hypir_sweep.moasha), HyperBand, median stopping or FIFO (time counted in the
    trial's validation rounds), each of which stops the trials that had ended before an interruption when the
    sweep resumes (hypir_sweep.resume) and lets confirmation trials run their full budget (hypir_sweep.confirm)."""
    from hypir_sweep.confirm import (ConfirmingASHA, ConfirmingFIFO, ConfirmingHyperBand, ConfirmingMedianStopping,
                                     ConfirmingMOASHA)
    from hypir_sweep.search import ROUND

    s = spec.scheduler
    if s.type == "asha":
        return ConfirmingASHA(time_attr=ROUND, max_t=spec.max_rounds, grace_period=s.grace_period,
                              reduction_factor=s.reduction_factor)
    if s.type == "moasha":
        return ConfirmingMOASHA([(o.metric, o.mode) for o in spec.objectives], time_attr=ROUND, max_t=spec.max_rounds,
                                grace_period=s.grace_period, reduction_factor=s.reduction_factor)
    if s.type == "hyperband":
        return ConfirmingHyperBand(time_attr=ROUND, max_t=spec.max_rounds, reduction_factor=s.reduction_factor)
    if s.type == "median":
        return ConfirmingMedianStopping(time_attr=ROUND, grace_period=s.grace_period,
                                        min_samples_required=s.min_samples_required)
    if s.population_based:
        from hypir_sweep.population import population_scheduler

        return population_scheduler(spec, {p.key: domain(p) for p in s.hyperparam_mutations})
    return ConfirmingFIFO()


def make_sampler(spec: SweepSpec):
    """The sweep's seeded TPE sampler, with the spec's search settings (the sweep and --dry-run both use it); by
    default it learns from the failures the config caused (hypir_sweep.failures)."""
    import optuna

    from hypir_sweep.failures import FailureAwareTPE

    sampler = FailureAwareTPE if spec.search.learn_from_failures else optuna.samplers.TPESampler
    with warnings.catch_warnings():  # multivariate and constant_liar are marked experimental by Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return sampler(seed=spec.search.seed, n_startup_trials=spec.search.n_startup_trials,
                       multivariate=spec.search.multivariate, constant_liar=spec.search.constant_liar)


def make_searcher(spec: SweepSpec):
    """Optuna TPE (seeded) over a study stored in the sweep folder, holding the earlier sweeps' trials first
    (search.warm_start); warm-start points run first."""
    import optuna

    from hypir_sweep.search import SweepSearch
    from hypir_sweep.warm_start import seed_study

    os.makedirs(spec.local_dir, exist_ok=True)
    storage = optuna.storages.RDBStorage(spec.optuna_storage)
    seed_study(spec, storage)  # search.warm_start: the earlier sweeps' trials, before the first proposal
    return SweepSearch(metric=spec.metric, mode=spec.mode, sampler=make_sampler(spec),
                       study_name=spec.name, storage=storage, max_rounds=spec.max_rounds,
                       objectives=[(o.metric, o.mode) for o in spec.objectives] or None,
                       scheduler_metric=spec.metric,
                       points_to_evaluate=[dict(p) for p in spec.search.points_to_evaluate] or None)


def make_search(spec: SweepSpec, scheduler):
    """What the sweep's Tuner asks for trials: the searcher (make_searcher) that knows the search's length and
    the confirmation phase, limited to the spec's concurrency, named to the scheduler (which tells it of every
    trial Tune adds). Pass it with ``max_concurrent_trials=None``: the limit is inside."""
    from ray.tune.search import ConcurrencyLimiter

    from hypir_sweep.confirm import SweepSearchGenerator

    searcher = make_searcher(spec)
    searcher.search_samples, searcher.base_seed = spec.search.num_samples, spec.base.seed
    searcher.confirm_top, searcher.confirm_seeds = spec.confirm.top, spec.confirm.seeds
    scheduler.attach_searcher(searcher, seed_searched="seed" in {p.key for p in spec.space})
    return SweepSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=spec.search.max_concurrent_trials))


def reuse_actors(spec: SweepSpec) -> bool:
    """Whether a trial's process goes on to train later trials (imports, CUDA context paid once per process):
    yes unless ``HYPIR_SWEEP_REUSE_ACTORS=0``, and never for population-based training (it restarts trials
    itself)."""
    return not spec.scheduler.population_based and os.environ.get("HYPIR_SWEEP_REUSE_ACTORS", "1") != "0"
