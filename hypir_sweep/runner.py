"""Run a sweep: the only place where Ray Tune, Optuna and the early-stopping scheduler are assembled.

``run_sweep(spec_path)`` starts (or with ``resume=True`` continues) the sweep in
``<storage_path>/<name>/``: Ray's experiment state and one folder per trial, the Optuna study in
``optuna.db`` (SQLite; open it with ``optuna.load_study`` or optuna-dashboard) and a copy of the
spec. ``dry_run(spec_path)`` checks everything and trains nothing.
"""

from __future__ import annotations

import glob
import math
import os
import shutil
import time
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from hypir_core.config import config_to_dict
from hypir_core.errors import ConfigError
from hypir_core.preflight import preflight
from hypir_sweep.analysis import STATUS_ORDER, load_sweep
from hypir_sweep.dashboard import print_dashboard_command
from hypir_sweep.spec import SpecError, SweepSpec, load_spec
from hypir_sweep.trial import TRIAL_CONFIG, run_trial, trial_dirname, trial_name

console = Console(highlight=False)
SPEC_COPY = "sweep_spec.yaml"
WEIGHT_FILES = ("HYPIR_sd2_best.pth", "HYPIR_sd2_final.pth")
# Ray writes its experiment state this often (seconds), so a killed driver loses little.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
# Every round is checkpointed on purpose (num_to_keep=2), which makes Ray warn about state snapshots.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def tune_space(spec: SweepSpec) -> dict[str, Any]:
    """The spec's space as Ray Tune domains (OptunaSearch turns them into Optuna distributions)."""
    from ray import tune

    space = {}
    for p in spec.space:
        if p.type == "choice":
            space[p.key] = tune.choice(list(p.values))
        elif p.type == "int":
            space[p.key] = tune.qrandint(int(p.low), int(p.high), int(p.q or 1))
        elif p.type == "loguniform":
            space[p.key] = tune.loguniform(p.low, p.high)
        else:
            space[p.key] = tune.quniform(p.low, p.high, p.q) if p.q else tune.uniform(p.low, p.high)
    return space


def optuna_distributions(spec: SweepSpec) -> dict[str, Any]:
    """The same space as Optuna distributions, converted by Ray's own OptunaSearch code."""
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch.convert_search_space(tune_space(spec))


def make_scheduler(spec: SweepSpec):
    """ASHA, HyperBand, median stopping or FIFO; time is counted in validation rounds."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule

    s = spec.scheduler
    if s.type == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=spec.max_rounds, grace_period=s.grace_period,
                             reduction_factor=s.reduction_factor)
    if s.type == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=spec.max_rounds,
                                  reduction_factor=s.reduction_factor)
    if s.type == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=s.grace_period,
                                  min_samples_required=s.min_samples_required)
    return FIFOScheduler()


def make_searcher(spec: SweepSpec):
    """Optuna TPE (seeded) over a study stored in the sweep folder; warm-start points run first."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    os.makedirs(spec.local_dir, exist_ok=True)
    storage = optuna.storages.RDBStorage(spec.optuna_storage)
    return OptunaSearch(metric=spec.metric, mode=spec.mode, sampler=optuna.samplers.TPESampler(seed=spec.search.seed),
                        study_name=spec.name, storage=storage,
                        points_to_evaluate=[dict(p) for p in spec.search.points_to_evaluate] or None)


def _trainable(spec: SweepSpec, experiment: str):
    from ray import tune

    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    experiment_dir = None if spec.remote_storage else experiment
    return tune.with_resources(tune.with_parameters(run_trial, spec=spec, experiment_dir=experiment_dir), resources)


def check_gpus(spec: SweepSpec, cluster_gpus: float | None = None) -> None:
    """A spec asking for GPUs where there are none is an error before anything starts."""
    if spec.resources.gpu <= 0:
        return
    where = "this machine"
    if cluster_gpus is None:
        import torch

        cluster_gpus = torch.cuda.device_count()
    else:
        where = "the Ray cluster"
    if cluster_gpus < spec.resources.gpu:
        has = f"{where} has no GPU" if cluster_gpus == 0 else f"{where} has only {cluster_gpus:g}"
        raise SpecError(f"Sweep spec {spec.source} asks for resources.gpu: {spec.resources.gpu:g} per trial but "
                        f"{has}; set resources.gpu: 0 to train on CPU, or join a GPU cluster with --address.")


def _write_spec_copy(spec: SweepSpec) -> None:
    os.makedirs(spec.local_dir, exist_ok=True)
    with open(os.path.join(spec.local_dir, SPEC_COPY), "w") as handle:
        handle.write(f"# the spec this sweep ran, from {spec.source}; base config resolved below as base_resolved\n")
        yaml.safe_dump({**spec.raw, "name": spec.name, "base_resolved": config_to_dict(spec.base)}, handle,
                       sort_keys=False)


def dry_run(spec_path: str) -> int:
    """Validate the spec, print space, resources and 3 sampled configs, check data and weights; train nothing."""
    import optuna

    spec = load_spec(spec_path)
    console.print(f"[bold]Sweep '{spec.name}'[/bold] from {spec.source}: base config {spec.base_config}"
                  + (f" with {', '.join(spec.overrides)}" if spec.overrides else ""))
    table = Table(title="Search space")
    for column in ("key", "distribution"):
        table.add_column(column)
    for p in spec.space:
        table.add_row(p.key, p.describe())
    for key, follows in spec.ties.items():
        table.add_row(key, f"= {follows}")
    console.print(table)
    s, sc = spec.search, spec.scheduler
    console.print(f"search: Optuna TPE, seed {s.seed}, {s.num_samples} trials, at most {s.max_concurrent_trials} "
                  f"at once, {len(s.points_to_evaluate)} warm-start points first ({', '.join(s.point_labels) or '-'})")
    console.print(f"scheduler: {sc.type}, {spec.max_rounds} validation rounds per full trial "
                  f"({spec.base.max_train_steps} steps, validation every {spec.base.validation_steps})"
                  + (f", grace {sc.grace_period}, reduction factor {sc.reduction_factor}" if sc.type == "asha" else
                     f", reduction factor {sc.reduction_factor}" if sc.type == "hyperband" else ""))
    make_scheduler(spec)
    if sc.type == "hyperband" and s.max_concurrent_trials < s.num_samples:
        console.print("[yellow]hyperband compares trials of a bracket only when they run side by side; with "
                      f"max_concurrent_trials {s.max_concurrent_trials} it stops few or none (asha does not "
                      "need this).[/yellow]")
    console.print(f"resources per trial: {spec.resources.gpu:g} GPU, {spec.resources.cpu:g} CPU; "
                  f"metric {spec.metric} ({spec.mode}); results in {spec.sweep_dir}; tracking {spec.tracking.report_to}")
    try:
        check_gpus(spec)
        gpus_ok = True
    except SpecError as exc:
        console.print(f"[red]{exc}[/red]")
        gpus_ok = False

    # The first configs the sweep will try: the same seeded TPE sampler over the same distributions.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if spec.mode == "max" else "minimize",
                                sampler=optuna.samplers.TPESampler(seed=s.seed))
    for point in s.points_to_evaluate:
        study.enqueue_trial(dict(point))
    distributions = optuna_distributions(spec)
    for index in range(min(3, s.num_samples)):
        params = study.ask(fixed_distributions=distributions).params
        cfg = spec.trial_config(params, output_dir=f"{spec.sweep_dir}/trial_<id>", name=f"{spec.name}-<id>")
        label = s.point_labels[index] if index < len(s.point_labels) else "sampled"
        shown = {p.key: params[p.key] for p in spec.space}
        shown.update({k: getattr(cfg, k) for k in spec.ties if hasattr(cfg, k)})
        console.print(f"trial {index + 1} ({label}): " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))

    checks = preflight(spec.base)
    table = Table(title="Preflight checks (base config)")
    for column in ("check", "status", "detail"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(check.name, "[green]ok[/green]" if check.ok else "[red]FAILED[/red]", check.detail)
    console.print(table)
    ok = gpus_ok and all(c.ok for c in checks)
    console.print("[green]Ready to sweep.[/green]" if ok else "[red]Dry run found problems.[/red]")
    return 0 if ok else 2


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def run_sweep(spec_path: str, resume: bool = False, address: str | None = None, progress: bool = True) -> int:
    """Run (or resume) a sweep; print the best trial and where its config and weights are. Returns an exit code."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _use_cluster_token()  # before Ray is imported: it reads its auth settings then
    import ray
    from ray import tune

    spec = load_spec(spec_path)
    storage_path = spec.storage_path if spec.remote_storage else os.path.abspath(spec.storage_path)
    experiment = spec.sweep_dir if spec.remote_storage else os.path.join(storage_path, spec.name)
    exists = tune.Tuner.can_restore(experiment)
    snapshot = spec.remote_storage or bool(glob.glob(os.path.join(experiment, "experiment_state-*.json")))
    if resume and not exists:
        raise SpecError(f"There is no sweep to resume in {experiment}; start it without --resume.")
    if resume and not snapshot:
        raise SpecError(f"The sweep in {experiment} stopped before its first state snapshot, so there is nothing to "
                        f"resume; delete that folder and start it again without --resume.")
    if not resume and exists:
        raise SpecError(f"{experiment} already holds sweep '{spec.name}'; continue it with --resume, or give the "
                        f"spec another name (or delete that folder) to start over.")
    if not resume:
        _check_fresh_study(spec)
    if not address:
        check_gpus(spec)
    failed = [c for c in preflight(spec.base) if not c.ok]
    if failed:
        raise ConfigError(f"The base config {spec.base_config} cannot train ({failed[0].name}): {failed[0].detail}")

    try:
        ray.init(address=address, include_dashboard=False, configure_logging=True, logging_level="WARNING",
                 log_to_driver=True)
    except ConnectionError as exc:
        raise SpecError(f"Cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}; check the "
                        f"address ('ray status' on the head prints it) and the cluster's auth token.") from None
    try:
        if address:
            check_gpus(spec, ray.cluster_resources().get("GPU", 0.0))
        if not resume:
            _write_spec_copy(spec)
        trainable = _trainable(spec, experiment)
        if resume:
            tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
            console.print(f"Resuming sweep '{spec.name}' from {experiment}")
        else:
            tuner = tune.Tuner(
                trainable, param_space=tune_space(spec),
                tune_config=tune.TuneConfig(
                    metric=spec.metric, mode=spec.mode, search_alg=make_searcher(spec),
                    scheduler=make_scheduler(spec), num_samples=spec.search.num_samples,
                    max_concurrent_trials=spec.search.max_concurrent_trials,
                    trial_name_creator=trial_name, trial_dirname_creator=trial_dirname),
                run_config=tune.RunConfig(
                    name=spec.name, storage_path=storage_path,
                    failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                    # Two: a killed driver's last state snapshot may name the checkpoint before the newest.
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    # Object storage: upload a trial's folder when it ends (by then its own checkpoint
                    # copies are gone); local and NFS storage: trials write there directly.
                    sync_config=tune.SyncConfig(sync_artifacts=spec.remote_storage,
                                                sync_artifacts_on_checkpoint=False),
                    verbose=1 if progress else 0))
            console.print(f"Sweep '{spec.name}': {spec.search.num_samples} trials, {spec.scheduler.type} early "
                          f"stopping, results in {experiment}")
        started = time.time()
        results = tuner.fit()
        elapsed = time.time() - started
        sweep = load_sweep(experiment)
        pruned = prune_weights(spec, sweep) if not spec.remote_storage else []
        return print_outcome(spec, sweep, results, elapsed, pruned)
    finally:
        ray.shutdown()


def _use_cluster_token() -> None:
    """Clusters from ``ray start`` use token auth; use the token this machine holds unless told otherwise."""
    has_token = os.environ.get("RAY_AUTH_TOKEN") or os.path.exists(
        os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token"))
    if has_token and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"


def _check_fresh_study(spec: SweepSpec) -> None:
    """A new sweep must not inherit an old Optuna study of the same name (TPE would learn from stale trials)."""
    import optuna

    if not spec.search.optuna_storage and not os.path.exists(os.path.join(spec.local_dir, "optuna.db")):
        return
    if spec.name in optuna.get_all_study_names(spec.optuna_storage):
        raise SpecError(f"The Optuna storage {spec.optuna_storage} already holds a study named '{spec.name}'; "
                        f"continue that sweep with --resume, or give the spec another name.")


def prune_weights(spec: SweepSpec, sweep) -> list[str]:
    """Keep HYPIR weights and Tune checkpoints of the ``keep_top_k`` best ended trials only (bounds disk).

    Unfinished and errored trials keep theirs: ``--resume`` continues them from their checkpoints.
    """
    ended = [row for row in sweep.rows if row.status in ("completed", "early-stopped", "diverged")]
    keep = {row.path for row in [r for r in sweep.rows if math.isfinite(r.best)][:spec.keep_top_k]}
    pruned = []
    for row in ended:
        if row.path in keep:
            continue
        for name in WEIGHT_FILES:
            if os.path.exists(os.path.join(row.path, name)):
                os.remove(os.path.join(row.path, name))
                pruned.append(row.path)
        for folder in glob.glob(os.path.join(row.path, "checkpoint_*")):
            shutil.rmtree(folder, ignore_errors=True)
    return sorted(set(pruned))


def print_outcome(spec: SweepSpec, sweep, results, elapsed: float, pruned: list[str]) -> int:
    """The end of a sweep: counts, the best trial (analyze.py's ranking), its score, its config and weights."""
    errors = sum(1 for r in results if r.error is not None)
    counts = {status: sum(1 for r in sweep.rows if r.status == status) for status in STATUS_ORDER}
    console.print(f"Sweep '{spec.name}' finished in {elapsed / 60:.1f} min: {len(sweep.rows)} trials ("
                  + ", ".join(f"{n} {status}" for status, n in counts.items() if n) + ").")
    best = next((r for r in sweep.rows if math.isfinite(r.best)), None)
    if best is None:
        console.print("[red]No trial reported a validation round.[/red]")
        return 1
    console.print(f"[bold]Best trial {best.trial}[/bold] ({best.status}, {best.rounds} rounds): {spec.metric} "
                  f"{best.best:.4f}")
    console.print("  params: " + ", ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()))
    console.print(f"  config: {os.path.join(best.path, TRIAL_CONFIG)}")
    weights = os.path.join(best.path, WEIGHT_FILES[0])
    console.print(f"  weights (HYPIR format, its best Final_Score round): {weights}"
                  if spec.remote_storage or os.path.exists(weights) else "  weights: not kept (keep_top_k: 0)")
    if pruned:
        console.print(f"Weights kept for the top {spec.keep_top_k} trials; removed from {len(pruned)} others.")
    console.print(f"Study: optuna.load_study(study_name='{spec.name}', storage='{spec.optuna_storage}')")
    console.print(f"Leaderboard, best config and plots: python analyze.py {spec.sweep_dir}")
    print_dashboard_command(console, spec.sweep_dir)
    return 0 if not errors else 1
