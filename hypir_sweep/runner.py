"""Run a sweep: the Tuner built from the spec's pieces (hypir_sweep.assembly), started or resumed.

``run_sweep(spec_path)`` starts (or with ``resume=True`` continues) the sweep in
``<storage_path>/<name>/``: Ray's experiment state and one folder per trial, the Optuna study in
``optuna.db`` (SQLite; open it with ``optuna.load_study`` or optuna-dashboard) and a copy of the
spec. ``hypir_sweep.dry_run`` checks everything and trains nothing.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
import signal
import sys
import time
from typing import Any

import yaml

from hypir_core import faults
from hypir_core.errors import ConfigError
from hypir_core.preflight import preflight
from hypir_core.quiet import VERBOSE_ENV
from hypir_core.schema import Source
from hypir_core.terminal import WARN, make_console
from hypir_sweep.analysis import load_sweep
from hypir_sweep.assembly import make_scheduler, make_search, reuse_actors, tune_space
from hypir_sweep.outcome import fmt_value, print_outcome, prune_weights
from hypir_sweep.resources import check_fits, check_gpus, cluster_nodes, local_node
from hypir_sweep.spec import SPEC_COPY, SpecError, SweepSpec, load_spec, spec_copy
from hypir_sweep.trial import sweep_trainable, trial_dirname, trial_name
from hypir_sweep.warm_start import earlier_sweeps

console = make_console()
# Ray writes its experiment state this often (seconds), so a killed driver loses little.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
# A trial that ends without finishing its budget (diverged, out of memory) says so in a last result
# without scores; the spec's metric names are checked before the sweep starts.
os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
# Every round is checkpointed on purpose, which makes Ray warn about state snapshots.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _trainable(spec: SweepSpec):
    from ray import tune

    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    experiment_dir = None if spec.remote_storage else os.path.abspath(spec.sweep_dir)
    return tune.with_resources(sweep_trainable(spec, experiment_dir), resources)


def _write_spec_copy(spec: SweepSpec) -> None:
    os.makedirs(spec.local_dir, exist_ok=True)
    path = os.path.join(spec.local_dir, SPEC_COPY)
    with open(path, "w") as handle:
        handle.write(f"# the spec this sweep ran, from {spec.source}; base config resolved below as base_resolved\n")
        yaml.safe_dump(spec_copy(spec), handle, sort_keys=False)
    if spec.remote_storage:
        upload(path, spec.sweep_dir + "/" + SPEC_COPY)  # analyze.py on another machine reads it there


def upload(local_path: str, uri: str) -> None:
    """Copy a local file to object storage (s3://, gs://), through pyarrow as Ray does."""
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(uri)
    pyarrow.fs.copy_files(local_path, inner, destination_filesystem=fs)


def _share_study(spec: SweepSpec) -> None:
    """With object storage and the default SQLite study, put a copy of the study beside the sweep."""
    local = os.path.join(spec.local_dir, "optuna.db")
    if spec.remote_storage and not spec.search.optuna_storage and os.path.exists(local):
        upload(local, spec.sweep_dir + "/optuna.db")


def _saved_spec(spec: SweepSpec) -> dict | None:
    path = os.path.join(spec.local_dir, SPEC_COPY)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return yaml.safe_load(handle)


def _resumed_scheduler(spec: SweepSpec) -> SweepSpec:
    """A Pareto sweep started before moasha became the default with objectives (its copy of the spec names no
    scheduler_type) and whose spec names no scheduler type resumes with the scalar asha it started with."""
    saved = _saved_spec(spec)
    if saved is None or "scheduler_type" in saved:
        return spec
    started_with = (saved.get("scheduler") or {}).get("type", "asha")
    if spec.scheduler.type != started_with and "type" not in (spec.raw.get("scheduler") or {}):
        return dataclasses.replace(spec, scheduler=dataclasses.replace(spec.scheduler, type=started_with))
    return spec


def _check_unchanged(spec: SweepSpec) -> None:
    """--resume runs the spec the sweep started with: an edited spec or base config is refused, naming what changed.
    ``confirm`` is the sweep's to change (``--confirm``); ``_resumed_confirm`` decides it."""
    saved = _saved_spec(spec)
    if saved is None:
        return
    now = yaml.safe_load(yaml.safe_dump(spec_copy(spec), sort_keys=False))
    if "scheduler_type" not in saved:  # a copy written before the resolved type was kept: it was the written one
        now.pop("scheduler_type", None)
    saved, now = ({k: v for k, v in d.items() if k != "confirm"} for d in (saved, now))
    changed = _differences(saved, now)
    if changed:
        shown = "; ".join(changed[:4]) + (f"; and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise SpecError(f"{spec.source} (or its base config) changed since sweep '{spec.name}' started ({shown}); "
                        f"--resume continues the sweep as it started: undo the change, or save the spec under "
                        f"another name to start a new sweep.")


def _differences(saved: Any, now: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(now, dict):
        out = []
        for key in list(saved) + [k for k in now if k not in saved]:
            if key == "source":
                continue
            out += _differences(saved.get(key), now.get(key), f"{prefix}{key}.")
        return out
    return [] if saved == now else [f"{prefix.rstrip('.')}: {fmt_value(saved)} -> {fmt_value(now)}"]


def _resumed_confirm(spec: SweepSpec, confirm: bool) -> SweepSpec:
    """The confirmation settings a resumed sweep runs with: the sweep's own (its spec copy) on --resume; with
    --confirm the spec's, or top 3 when the spec has none, written into the spec copy."""
    from hypir_sweep.confirm import DEFAULT_TOP
    from hypir_sweep.spec import Confirm, check_confirm

    saved = (_saved_spec(spec) or {}).get("confirm") or {}
    if not confirm:
        kept = Confirm(top=int(saved.get("top", 0)), seeds=int(saved.get("seeds", Confirm().seeds)))
        if spec.confirm.top and (spec.confirm.top, spec.confirm.seeds) != (kept.top, kept.seeds):
            raise SpecError(f"'confirm' in {spec.source} ({spec.confirm.top} finalists x {spec.confirm.seeds} seeds) "
                            f"differs from the sweep's ({kept.top} x {kept.seeds}); apply it with python launch.py "
                            f"{spec.source} --confirm.")
        return dataclasses.replace(spec, confirm=kept)
    wanted = spec.confirm if spec.confirm.top else Confirm(top=DEFAULT_TOP, seeds=spec.confirm.seeds)
    spec = dataclasses.replace(spec, confirm=wanted, raw={**spec.raw, "confirm": {"top": wanted.top,
                                                                                   "seeds": wanted.seeds}})
    check_confirm(spec, Source(spec.source, error=SpecError))
    return spec


def run_sweep(spec_path: str, resume: bool = False, address: str | None = None, progress: bool = True,
              verbose: bool = False, confirm: bool = False) -> int:
    """Run (or resume) a sweep; print the best trial and where its config and weights are. Returns an exit code.

    ``progress``: Ray's trial table every 30 s (a line per round either way); ``verbose``: Ray's own boxes per
    trial and every trial process's log, libraries' included. ``confirm``: continue a sweep (ended or not) with
    its finalists confirmed over seeds (the spec's ``confirm``, or 3 finalists x its seeds; hypir_sweep.confirm).
    """
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        _use_cluster_token()  # before Ray is imported: it reads its auth settings then
    import ray
    from ray import tune

    spec = load_spec(spec_path)
    for warning in spec.warnings:
        console.print(warning, style=WARN)
    storage_path = spec.storage_path if spec.remote_storage else os.path.abspath(spec.storage_path)
    experiment = spec.sweep_dir if spec.remote_storage else os.path.join(storage_path, spec.name)
    exists = tune.Tuner.can_restore(experiment)
    snapshot = spec.remote_storage or bool(glob.glob(os.path.join(experiment, "experiment_state-*.json")))
    started_before = exists or os.path.exists(os.path.join(spec.local_dir, SPEC_COPY))
    if confirm and not started_before:
        raise SpecError(f"There is no sweep in {experiment} to confirm the finalists of; start it (with a 'confirm' "
                        f"key in {spec_path} to confirm them when its search ends).")
    resume = resume or confirm
    if resume and not started_before:
        raise SpecError(f"There is no sweep to resume in {experiment}; start it without --resume.")
    if resume and not (exists and snapshot):
        # Killed before Ray saved any state: nothing ran that could be continued, so start it over.
        console.print(f"The sweep in {experiment} stopped before its first state snapshot; starting it over.")
        _start_over(spec, experiment)
        resume = exists = False
    if resume:
        spec = _resumed_scheduler(spec)
        _check_unchanged(spec)
        spec = _resumed_confirm(spec, confirm)
        if not spec.remote_storage:
            from hypir_sweep.resume import check_snapshot

            for warning in check_snapshot(experiment):  # Ray would start a damaged sweep over without a word
                console.print(warning, style=WARN)
    if not resume and exists:
        raise SpecError(f"{experiment} already holds sweep '{spec.name}'; continue it with --resume, or give the "
                        f"spec another name (or delete that folder) to start over.")
    if not resume:
        _check_fresh_study(spec)
        for earlier in earlier_sweeps(spec, Source(spec.source, error=SpecError).fail):
            console.print(f"Warm start: {earlier.summary()}")
    if not address:
        check_gpus(spec)
        check_fits(spec, [local_node()], None)
    failed = [c for c in preflight(spec.base) if not c.ok]
    if failed:
        raise ConfigError(f"The base config {spec.base_config} cannot train ({failed[0].name}): {failed[0].detail}")
    # Faults injected for tests (hypir_core.faults) fire once per sweep, and may target this process.
    os.environ.setdefault(faults.DIR_ENV, os.path.join(os.path.abspath(spec.local_dir), ".faults"))
    os.environ[faults.DRIVER_ENV] = str(os.getpid())

    if not verbose:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the study's own news is in our lines
    try:
        ray.init(address=address, include_dashboard=False, configure_logging=True, logging_level="WARNING",
                 log_to_driver=verbose,  # trial logs stay in Ray's session folder unless --verbose
                 runtime_env={"env_vars": {VERBOSE_ENV: "1"}} if verbose else None)  # for trials on a cluster
    except ConnectionError as exc:
        raise SpecError(f"Cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}; check the "
                        f"address ('ray status' on the head prints it) and the cluster's auth token.") from None
    try:
        alive, autoscaled = cluster_nodes()
        if address:
            check_gpus(spec, sum(node.gpu for node in alive))
        warning = check_fits(spec, alive, autoscaled)
        if warning:
            console.print(warning, style=WARN)
        if not resume or confirm:
            _write_spec_copy(spec)  # with --confirm: the settings a later --resume keeps
        tuner = _restored_tuner(spec, experiment, confirm) if resume else _new_tuner(spec, storage_path, progress,
                                                                                     verbose)
        started = time.time()
        _handle_interrupts(spec)
        try:
            results = tuner.fit()
        except KeyboardInterrupt:  # before Tune had started its loop: nothing ran that needs saving
            console.print(f"Sweep '{spec.name}' interrupted while starting.", style=WARN)
            console.print(f"Continue it with:\n  {resume_command(spec_path)}")
            return 130
        elapsed = time.time() - started
        sweep = load_sweep(experiment)
        from hypir_sweep import confirm as confirmation

        if any(not r.finished for r in sweep.rows + sweep.confirm_rows) or len(sweep.rows) < spec.search.num_samples \
                or len(sweep.confirm_rows) < confirmation.expected_trials(spec):
            console.print(f"Sweep '{spec.name}' interrupted; its state is saved.", style=WARN)
            console.print(f"Continue it with:\n  {resume_command(spec_path)}")
            return 130
        pruned = [] if spec.remote_storage else confirmation.prune(spec, sweep, prune_weights)
        code = print_outcome(spec, sweep, results, elapsed, pruned)
        confirmation.print_finalists(spec, sweep)
        return code
    finally:
        ray.shutdown()
        _share_study(spec)


def resume_command(spec_path: str) -> str:
    return " ".join(["python", os.path.basename(sys.argv[0]) if sys.argv[0].endswith("launch.py") else "launch.py",
                     spec_path, "--resume"])


def _handle_interrupts(spec: SweepSpec) -> None:
    """First Ctrl-C: Tune stops the trials and saves its state; a second one exits at once."""
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # Tune's own would leave a second Ctrl-C to Python
    count = [0]

    def on_interrupt(signum, frame):
        count[0] += 1
        if count[0] > 1:
            print(f"\nInterrupted twice: exiting without waiting; the last saved state of sweep '{spec.name}' is "
                  f"kept (resume with --resume).", file=sys.stderr, flush=True)
            os._exit(130)
        tune_stop = signal.getsignal(signal.SIGUSR1)  # Tune's "stop and save" handler, once it runs
        if not callable(tune_stop):
            raise KeyboardInterrupt
        print(f"\nStopping sweep '{spec.name}': saving its state (Ctrl-C again to exit at once).", file=sys.stderr,
              flush=True)
        tune_stop(signum, frame)

    signal.signal(signal.SIGINT, on_interrupt)


def _new_tuner(spec: SweepSpec, storage_path: str, progress: bool, verbose: bool):
    from ray import tune

    from hypir_sweep.resume import SchedulerState

    scheduler = make_scheduler(spec)
    if spec.scheduler.population_based:
        from hypir_sweep.population import initial_population

        searcher = initial_population(spec)
        console.print(f"Sweep '{spec.name}': a population of {spec.search.num_samples}, {spec.scheduler.type} every "
                      f"{spec.scheduler.perturbation_interval} rounds, results in {spec.sweep_dir}")
    else:
        searcher = make_search(spec, scheduler)  # the concurrency limit is inside it
        scheduler.watch_study(spec.optuna_storage, spec.name)  # on --resume: which trials had ended
        confirming = f", then {spec.confirm.top} finalists x {spec.confirm.seeds} new seeds" if spec.confirm.top else ""
        console.print(f"Sweep '{spec.name}': {spec.search.num_samples} trials, {spec.scheduler.type} early stopping"
                      f"{confirming}, results in {spec.sweep_dir}")
    return tune.Tuner(
        _trainable(spec), param_space=tune_space(spec),
        tune_config=tune.TuneConfig(
            metric=spec.metric, mode=spec.mode, search_alg=searcher, scheduler=scheduler,
            # The concurrency limit is the searcher's own (Tune would ignore this one, with a warning).
            num_samples=spec.search.num_samples + spec.confirm_trials,
            trial_name_creator=trial_name, trial_dirname_creator=trial_dirname,
            # A trial's process trains the next trial too; see reuse_actors().
            reuse_actors=reuse_actors(spec)),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            # Local and NFS storage: each trial prunes its own checkpoints, never one that a lagging state
            # snapshot may still name (hypir_sweep.trial.prune_tune_checkpoints); object storage: Tune keeps two.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2 if spec.remote_storage else None),
            # Saved with Tune's state, so --resume has the scheduler's rungs (ASHA) or population state (PBT).
            callbacks=[SchedulerState(scheduler)] + ([] if verbose else [sweep_console(spec, progress)]),
            # Object storage: upload a trial's folder when it ends (it holds no training state);
            # local and NFS storage: trials write there directly.
            sync_config=tune.SyncConfig(sync_artifacts=spec.remote_storage, sync_artifacts_on_checkpoint=False),
            verbose=2 if verbose else 0))  # Ray's own reporter: trial errors only, unless --verbose


def sweep_console(spec: SweepSpec, table: bool):
    """The sweep's console: a line per round, and Ray's trial table every 30 s when ``table``."""
    from hypir_sweep.console import SweepConsole

    return SweepConsole(spec.metric, spec.mode, spec.max_rounds, tune_space(spec),
                        spec.search.num_samples + spec.confirm_trials, table)


def _restored_tuner(spec: SweepSpec, experiment: str, confirm: bool = False):
    from ray import tune

    if spec.scheduler.type in ("hyperband", "median"):
        console.print(f"{spec.scheduler.type} early stopping starts its statistics afresh on resume (asha and "
                      f"population-based training keep theirs).", style=WARN)
    console.print(f"Resuming sweep '{spec.name}' from {experiment}")
    if not spec.scheduler.population_based and not spec.remote_storage:
        import optuna

        from hypir_sweep.resume import settle_trial_folders

        try:
            study = optuna.load_study(study_name=spec.name, storage=spec.optuna_storage)
        except KeyError:  # killed before the searcher made its study: there is nothing to settle
            study = None
        objectives = [o.metric for o in spec.objectives] or None
        changes = settle_trial_folders(experiment, study, spec.metric, spec.mode, spec.max_rounds, objectives) \
            if study is not None else []
        for change in changes:
            console.print(f"  {change}")
    tuner = tune.Tuner.restore(experiment, trainable=_trainable(spec), resume_unfinished=True, resume_errored=True)
    if confirm:
        from hypir_sweep.confirm import SweepSearchGenerator

        # The restored search generator (Ray keeps no public handle on it) takes the settings as it restores.
        generator = getattr(getattr(getattr(tuner, "_local_tuner", None), "_tune_config", None), "search_alg", None)
        if not isinstance(generator, SweepSearchGenerator):
            raise SpecError(f"Sweep '{spec.name}' was started by a version of hypir-sweep without confirmation "
                            f"trials, so --confirm cannot add them to it; run its finalists' configs with "
                            f"launch.py --single and other seeds (seed=...), or start the sweep anew with 'confirm'.")
        generator.request_confirm(spec.confirm.top, spec.confirm.seeds)
        console.print(f"Confirming the {spec.confirm.top} best full-budget configs with {spec.confirm.seeds} new "
                      f"seeds each")
    return tuner


def _start_over(spec: SweepSpec, experiment: str) -> None:
    """Remove what a sweep killed before its first state snapshot left: its folder and its Optuna study."""
    import optuna

    if spec.name in optuna.get_all_study_names(spec.optuna_storage):
        optuna.delete_study(study_name=spec.name, storage=spec.optuna_storage)
    if not spec.remote_storage:
        shutil.rmtree(experiment, ignore_errors=True)


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


