"""``launch.py SPEC --dry-run``: the spec checked, its space, resources and first sampled configs, and the
preflight checks of its base config; nothing trains."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from hypir_core.config import shown as override_text
from hypir_core.preflight import preflight
from hypir_core.schema import Source
from hypir_core.terminal import BAD, OK, WARN, make_console, status_cell
from hypir_sweep.assembly import make_sampler, make_scheduler, optuna_distributions
from hypir_sweep.outcome import fmt_value
from hypir_sweep.resources import check_fits, check_gpus, local_node
from hypir_sweep.spec import SpecError, load_spec
from hypir_sweep.warm_start import earlier_sweeps

console = make_console()


def dry_run(spec_path: str) -> int:
    """Validate the spec, print space, resources and 3 sampled configs, check data and weights; train nothing."""
    import optuna

    spec = load_spec(spec_path)
    console.print(f"Sweep '{spec.name}' from {spec.source}: base config {spec.base_config}"
                  + (f" with {', '.join(f'{k}={override_text(v)}' for k, v in spec.overrides.items())}" if spec.overrides
                     else ""))
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
    for earlier in earlier_sweeps(spec, Source(spec.source, error=SpecError).fail):
        console.print(f"warm start: {earlier.summary()}")
    console.print(f"scheduler: {sc.type}, {spec.max_rounds} validation rounds per full trial "
                  f"({spec.base.max_train_steps} steps, validation every {spec.base.validation_steps})"
                  + (f", grace {sc.grace_period}, reduction factor {sc.reduction_factor}"
                     if sc.type in ("asha", "moasha") else
                     f", reduction factor {sc.reduction_factor}" if sc.type == "hyperband" else ""))
    make_scheduler(spec)
    if sc.type == "hyperband" and s.max_concurrent_trials < s.num_samples:
        console.print("hyperband compares trials of a bracket only when they run side by side; with "
                      f"max_concurrent_trials {s.max_concurrent_trials} it stops few or none (asha does not "
                      "need this).", style=WARN)
    if spec.objectives:
        console.print("objectives (Pareto front): " + ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives)
                      + ("; early stopping by their front (moasha)" if sc.type == "moasha" else
                         f"; early stopping on {spec.metric}" if sc.type not in ("fifo", "pbt", "pb2") else ""))
    console.print(f"resources per trial: {spec.resources.gpu:g} GPU, {spec.resources.cpu:g} CPU; "
                  f"metric {spec.metric} ({spec.mode}); results in {spec.sweep_dir}; tracking {spec.tracking.report_to}")
    for warning in spec.warnings:
        console.print(warning, style=WARN)
    try:
        check_gpus(spec)
        check_fits(spec, [local_node()], None)  # a cluster joined with --address is checked when the sweep starts
        gpus_ok = True
    except SpecError as exc:
        console.print(str(exc), style=BAD)
        gpus_ok = False

    # The first configs the sweep will try: the same seeded TPE sampler over the same distributions.
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    modes = [o.mode for o in spec.objectives] or [spec.mode]
    study = optuna.create_study(directions=["maximize" if m == "max" else "minimize" for m in modes],
                                sampler=make_sampler(spec))
    for point in s.points_to_evaluate:
        study.enqueue_trial(dict(point))
    distributions = optuna_distributions(spec)
    for index in range(min(3, s.num_samples)):
        params = study.ask(fixed_distributions=distributions).params
        cfg = spec.trial_config(params, output_dir=f"{spec.sweep_dir}/trial_<id>", name=f"{spec.name}-<id>")
        label = s.point_labels[index] if index < len(s.point_labels) else "sampled"
        shown = {p.key: params[p.key] for p in spec.space}
        shown.update({k: getattr(cfg, k) for k in spec.ties if hasattr(cfg, k)})
        console.print(f"trial {index + 1} ({label}): " + ", ".join(f"{k}={fmt_value(v)}" for k, v in shown.items()))

    gpu = spec.resources.gpu
    checks = preflight(spec.base, device="cuda" if gpu > 0 else "cpu", gpu_share=gpu if gpu > 0 else None)
    table = Table(title="Preflight checks (base config)")
    for column in ("check", "status", "detail"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(check.name, Text(*status_cell(check.ok)), check.detail)
    console.print(table)
    ok = gpus_ok and all(c.ok for c in checks)
    console.print("Ready to sweep." if ok else "Dry run found problems.", style=OK if ok else BAD)
    return 0 if ok else 2
