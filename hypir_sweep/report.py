"""``python analyze.py``: print the leaderboard and write the analysis folder of a sweep.

The folder (``<sweep>/analysis/`` by default) holds leaderboard.csv, best_config.yaml,
baseline_comparison.csv (with ``--baseline``), plots/*.png and report.html, which embeds them all.
"""

from __future__ import annotations

import math
import os
import sys

import pandas as pd
from rich.console import Console
from rich.table import Table

from hypir_core.checkpoint import BEST_WEIGHTS, FINAL_WEIGHTS
from hypir_core.config_data import reported_types
from hypir_sweep import audit, finalists, front_plots, guard, handoff, pareto, plots
from hypir_sweep.analysis import (RANK_RULE, STATUS_ORDER, AnalysisError, Sweep, baseline_table, cost, importances,
                                  leaderboard, load_sweep, newest_sweep, read_baseline, write_best_config)
from hypir_sweep.dashboard import print_dashboard_command

# Piped to a file or CI log, rich would wrap the leaderboard at 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
SHOWN_PARAMS = 6  # more parameter columns do not fit a terminal; leaderboard.csv has them all


def _fmt(value) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def print_leaderboard(sweep: Sweep, table: pd.DataFrame, limit: int) -> None:
    counts = table["status"].value_counts().to_dict()
    title = (f"Sweep '{sweep.name}': {len(table)} trials ("
             + ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if s in counts) + ")")
    shown = ["rank", "trial", "status", "rounds", f"best {sweep.metric}", f"last {sweep.metric}", "PSNR", "SSIM",
             "LPIPS"] + sweep.param_keys[:SHOWN_PARAMS]
    rich_table = Table(title=title)
    for column in shown:
        rich_table.add_column(column.replace("val/", ""), justify="left" if column in ("trial", "status") else "right",
                              no_wrap=True)
    for _, row in table.head(limit).iterrows():
        style = None if row["status"] == "completed" else "dim"
        rich_table.add_row(*(_fmt(row[c]) for c in shown), style=style)
    console.print(rich_table)
    if len(table) > limit:
        console.print(f"({len(table) - limit} more rows in leaderboard.csv)")
    for row in sweep.rows:
        if row.note:
            console.print(f"trial {row.trial} {row.status}: {row.note}")
    console.print(RANK_RULE.format(metric=sweep.metric, mode=sweep.mode))


def make_plots(sweep: Sweep, table: pd.DataFrame, out_dir: str) -> list[tuple[str, str, str]]:
    """The report's figures: (heading, png path, caption)."""
    os.makedirs(out_dir, exist_ok=True)
    status = {r.trial: r.status for r in sweep.rows}
    sections = [("Score per round", plots.score_curves({r.trial: r.curve for r in sweep.rows}, status, sweep.metric,
                                                       os.path.join(out_dir, "score_curves.png")),
                 f"{sweep.metric} after each validation round; early-stopped trials faded.")]
    found = importances(sweep)
    sections.append(("Parameter importance", plots.param_importance(found, os.path.join(out_dir, "importance.png")),
                     "Optuna's fANOVA importance over the sweep's study (how much of the score's variance each "
                     "parameter explains)."))
    points = pd.DataFrame({"trial": table["trial"], "psnr": table["PSNR"], "lpips": table["LPIPS"],
                           "status": table["status"]})
    front = plots.pareto_front(points)
    sections.append(("PSNR against LPIPS", plots.psnr_vs_lpips(points, os.path.join(out_dir, "psnr_vs_lpips.png")),
                     "Each trial at its best round; the Pareto front (no trial has both higher PSNR and lower "
                     f"LPIPS): {', '.join(front) or '-'}."))
    type_columns = [c for c in table.columns if c.endswith(" PSNR") and c != "PSNR"]
    top = table.dropna(subset=type_columns).head(10).set_index("trial")[type_columns]
    top.columns = [c.removesuffix(" PSNR") for c in type_columns]
    sections.append(("Per degradation type", plots.type_heatmap(top, os.path.join(out_dir, "per_type_psnr.png")),
                     "PSNR per degradation type of the top trials (rank order)."))
    scored = table.dropna(subset=[f"best {sweep.metric}"])
    frame = scored[sweep.param_keys + [f"best {sweep.metric}"]].rename(columns={f"best {sweep.metric}": sweep.metric})
    sections.append(("Parallel coordinates", plots.parallel_coordinates(
        frame, sweep.param_keys, sweep.metric, os.path.join(out_dir, "parallel_coordinates.png")),
        "Every trial's parameters, coloured by its best score."))
    return sections


def run_analysis(sweep_path: str | None, baselines: list[str], out_dir: str | None = None, limit: int = 20,
                 pick: list[str] | None = None, target: tuple[str, str] | None = None,
                 guards: list[str] | None = None) -> int:
    """Analyse a sweep (the newest under sweep_results/ by default); print and write everything; exit code
    (1 when ``guards`` admit no trial).

    ``pick`` (``["knee"]`` or conditions such as ``["val/LPIPS<=0.08"]``) and ``target`` (metric, mode)
    choose the trial whose config is exported instead of the leaderboard's winner (or, with confirmed
    finalists, the best by mean); a Pareto sweep exports its knee by default. ``guards`` (``["PSNR>=-0.2"]``)
    export only a trial that loses no more than that on any degradation type against every baseline
    (hypir_sweep.guard). Also: the early-stopping audit (hypir_sweep.audit) and the finalists over seeds.
    """
    parsed = guard.parse_guards(guards or [])  # a mistake in a guard is said before anything is read
    if parsed and not baselines:
        raise AnalysisError("--guard compares each degradation type with a baseline run; add --baseline RUN_DIR (the "
                            "output_dir of a launch.py --single run, e.g. results/sd2_finetune_5k_improved).")
    sweep_path = sweep_path or newest_sweep()
    sweep = load_sweep(sweep_path)
    if out_dir is None:
        out_dir = os.path.join(sweep_path if "://" not in sweep_path else os.path.join("sweep_results", sweep.name),
                               "analysis")
    os.makedirs(out_dir, exist_ok=True)
    table = leaderboard(sweep)
    table.to_csv(os.path.join(out_dir, "leaderboard.csv"), index=False)
    print_leaderboard(sweep, table, limit)
    tables = [("Leaderboard", table.to_html(index=False, float_format=_fmt, na_rep="-"))]

    if sweep.objectives and not pick and pareto.points(sweep):
        pick = ["knee"]
    plots_dir = os.path.join(out_dir, "plots")
    trust_sections = []
    for lines, figures, html in (audit.section(sweep, out_dir, plots_dir), finalists.section(sweep, out_dir,
                                                                                              plots_dir)[:3]):
        _say(lines)
        trust_sections += figures
        if html:
            tables.append((figures[0][0] if figures else "Early-stopping audit", html))
    best_by_mean = finalists.finalists(sweep)[0] if sweep.confirm_rows and finalists.finalists(sweep) else None
    best_runs = [read_baseline(b, sweep.metric, sweep.mode) for b in baselines]
    final_runs = [read_final(b) for b in baselines]
    choice = guard.choose(sweep, pick or [], target, best_by_mean, parsed, best_runs, final_runs)
    _say(choice.lines)
    if not choice.table.empty:
        choice.table.to_csv(os.path.join(out_dir, "guard.csv"), index=False)
        tables.append(("Per-type guard", "".join(f"<p>{line}</p>" for line in choice.lines)))
    winner, picked, refused = choice.row, choice.row if choice.final_round else None, bool(parsed) and not choice.row
    if winner is not None:
        weights_name = FINAL_WEIGHTS if choice.final_round else BEST_WEIGHTS
        config_path, winner, weights = write_best_config(sweep, os.path.join(out_dir, "best_config.yaml"), winner,
                                                         why=choice.why, weights_name=weights_name)
        if choice.final_round:
            console.print(f"[bold]Picked: trial {winner.trial}[/bold] by {choice.why}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in winner.final_metrics.items() if k.count("/") == 1))
        else:
            reason = f" ({choice.why})" if choice.why else ""
            console.print(f"[bold]Best: trial {winner.trial}[/bold] ({winner.status}), {sweep.metric} "
                          f"{winner.best:.4f}{reason}")
        console.print(f"  config, ready to train: python launch.py --single {config_path}")
        console.print(f"  weights (HYPIR format{', its final round' if choice.final_round else ''}): "
                      f"{weights or 'not kept (outside keep_top_k)'}")
        if baselines:
            runs = final_runs if choice.final_round else best_runs
            comparison = baseline_table(sweep, winner, runs, winner.final_metrics if choice.final_round else None)
            comparison.to_csv(os.path.join(out_dir, "baseline_comparison.csv"), index=False)
            _print_comparison(comparison)
            tables.append(("Exported trial against the baselines", comparison.to_html(index=False,
                                                                                      float_format=_fmt)))
        tables.append(("Colour fix: validation as is and as HYPIR deploys",
                       print_deployment(sweep, winner, weights, config_path, out_dir, baselines)))
    elif refused:
        stale = os.path.join(out_dir, "best_config.yaml")
        if os.path.exists(stale):  # an earlier analysis's export must not pass for this one's
            os.remove(stale)
    else:
        console.print("[yellow]No trial has finished a validation round yet: no best config.[/yellow]")

    schedule_sections = []
    if (sweep.spec.get("scheduler") or {}).get("type") in ("pbt", "pb2") and winner is not None:
        schedule_sections = export_schedule(sweep, winner, out_dir)

    gpus = float((sweep.spec.get("resources") or {}).get("gpu", 1))
    spent = cost(sweep, gpus)
    unit = "GPU-hours" if spent["device"] == "GPU" else "CPU trial-hours"
    cost_line = (f"Cost: {spent['device_hours']:.2f} {unit} spent; early stopping saved about "
                 f"{spent['saved_hours']:.2f} {unit} against running every trial for all {sweep.max_rounds} rounds.")
    console.print(cost_line)

    sections = schedule_sections + trust_sections + make_plots(sweep, table, plots_dir)
    if sweep.objectives:
        front_sections, front_table = pareto_section(sweep, baselines, picked, os.path.join(out_dir, "plots"))
        sections = front_sections + sections
        tables.insert(1, ("Pareto front", front_table))
    report = plots.html_report(os.path.join(out_dir, "report.html"), f"Sweep {sweep.name}",
                               sections, tables + [("Cost", f"<p>{cost_line}</p>")])
    console.print(f"Leaderboard, plots and report: {out_dir} (open {report})")
    print_dashboard_command(console, sweep_path)
    return 1 if refused else 0


def _say(lines: list[str]) -> None:
    for line in lines:  # sentences with brackets and numbers: no rich markup, no wrapping
        console.print(line, markup=False, soft_wrap=True)


def print_deployment(sweep: Sweep, winner, weights: str | None, config_path: str, out_dir: str,
                     baselines: list[str]) -> str:
    """Both colour-fix settings for the winner and the baselines (their final rounds), whether the winner would
    change, and the handoff files beside best_config.yaml; returns the report's HTML for it."""
    import yaml

    types = handoff.sweep_types(sweep)
    main_fix = handoff.main_color_fix(sweep.spec["base_resolved"])
    runs = [(f"trial {winner.trial}", winner.final_metrics, main_fix)]
    runs += [(os.path.basename(os.path.normpath(b)), *handoff.read_run_final(b)) for b in baselines]
    comparison = handoff.comparison(runs, types)
    comparison.to_csv(os.path.join(out_dir, "color_fix_comparison.csv"), index=False)
    shown = ["run", "colour fix", "Final_Score", "PSNR", "SSIM", "LPIPS"] + [f"{t} PSNR" for t in types]
    table = Table(title="Final round with and without HYPIR's wavelet colour fix (color_fix_comparison.csv)")
    for column in shown:
        table.add_column(column, justify="left" if column in ("run", "colour fix") else "right")
    for _, row in comparison.iterrows():
        table.add_row(*(_fmt(row[c]) for c in shown))
    console.print(table)
    change = handoff.winner_change(sweep, winner)
    sentence = handoff.color_fix_sentence(winner.final_metrics, main_fix, types,
                                          best_is_last=weights is None or not weights.endswith(BEST_WEIGHTS)
                                          or winner.best == winner.last)
    with open(config_path) as handle:
        config = yaml.safe_load(handle)
    warnings = handoff.write_handoff(config, weights, config_path, out_dir, sentence, winner.trial)
    deploy = (f"Deploy it: {os.path.join(out_dir, 'HANDOFF.md')} (the commands for our restore, HYPIR's test.py and "
              f"the fork's inference.py), sd2_gradio.yaml; the fork's trainer: fork_config.yaml, which drops or "
              f"changes:")
    for line in (change, sentence, deploy, *(f"  - {w}" for w in warnings)):
        console.print(line, soft_wrap=True)  # one line each, whatever the width: sentences to read and grep
    return f"<p>{change}</p><p>{sentence}</p>" + comparison.to_html(index=False, float_format=_fmt, na_rep="-")


def export_schedule(sweep: Sweep, winner, out_dir: str) -> list:
    """Write ``best_schedule.yaml``: the PBT winner's history as one config with a schedule; plot it."""
    import json

    import yaml

    from hypir_core.config import config_from_dict, config_to_dict
    from hypir_sweep.population import lineage_schedule
    from hypir_sweep.spec import trial_values

    with open(os.path.join(winner.path, "summary.json")) as handle:
        lineage = json.load(handle).get("lineage") or []
    if not lineage:
        console.print(f"[yellow]Trial {winner.trial} recorded no lineage: no best_schedule.yaml.[/yellow]")
        return []
    first, entries = lineage_schedule(lineage)
    overrides = {**trial_values(first, sweep.spec.get("ties") or {}), "output_dir": f"results/{sweep.name}-schedule",
                 "schedule": entries}
    config = config_to_dict(config_from_dict(sweep.spec["base_resolved"], source=f"sweep {sweep.name}",
                                             name=f"{sweep.name}-schedule", overrides=overrides))
    path = os.path.join(out_dir, "best_schedule.yaml")
    with open(path, "w") as handle:
        handle.write(f"# the schedule trial {winner.trial} of sweep '{sweep.name}' was trained with (best "
                     f"{sweep.metric} {winner.best:.4f}), followed back through {len(lineage) - 1} exploit(s);\n"
                     f"# replay it from scratch: python launch.py --single {os.path.relpath(path)}\n")
        yaml.safe_dump(config, handle, sort_keys=False)
    console.print(f"Winner's schedule ({len(entries)} change(s)): python launch.py --single {path}")
    keys = [k for k in sweep.param_keys if len({str(s['params'].get(k)) for s in lineage}) > 1] or sweep.param_keys
    figure = plots.schedule_steps(lineage, keys, int(sweep.spec["base_resolved"]["max_train_steps"]),
                                  os.path.join(out_dir, "plots", "schedule.png"))
    return [("The winner's schedule", figure, f"Values trial {winner.trial}'s weights were trained with, step by "
                                              f"step, following population-based training's exploits back.")]


def pareto_section(sweep: Sweep, baselines: list[str], picked, plots_dir: str) -> tuple[list, str]:
    """Print the front and its hypervolume against each baseline; return the report's figures and front table."""
    front = pareto.front(sweep)
    on_front = {r.trial for r in front}
    metrics = [m for m, _ in sweep.objectives]
    table = Table(title=f"Pareto front: {len(front)} of {len(pareto.points(sweep))} full-budget trials")
    for column in ["trial", *metrics, *sweep.param_keys]:
        table.add_column(column.removeprefix("val/"), justify="left" if column == "trial" else "right")
    for row in front:
        mark = " (picked)" if picked is not None and row.trial == picked.trial else ""
        table.add_row(row.trial + mark, *(_fmt(row.final_metrics[m]) for m in metrics),
                      *(_fmt(row.params.get(k)) for k in sweep.param_keys))
    console.print(table)
    base_points = []
    for run_dir in baselines:
        name, final, _ = read_final(run_dir)
        base_points.append({"name": name, "dir": run_dir, **final})
        if all(m in final for m in metrics):
            volume = pareto.hypervolume(front, sweep.objectives, final)
            console.print(f"Hypervolume of the front beyond baseline {name} ({', '.join(f'{m} {final[m]:.4g}' for m in metrics)}): "
                          f"{volume:.4g}" + (" (no front point beats it on every objective)" if volume == 0 else ""))
    points = [{"trial": r.trial, "on_front": r.trial in on_front, **r.final_metrics} for r in pareto.points(sweep)]
    figures = [("Pareto front", front_plots.objective_front(points, sweep.objectives,
                                                            os.path.join(plots_dir, "pareto_front.png"), base_points,
                                                            picked.trial if picked is not None else None),
                "Each full-budget trial at its last round; dominated trials faded; baselines as crosses.")]
    shown = _spread(front, picked, 3)
    runs = [(f"{r.trial}{' (picked)' if picked is not None and r.trial == picked.trial else ''}", r.path)
            for r in shown] + [(b["name"], b["dir"]) for b in base_points]
    for kind in reported_types(sweep.spec["base_resolved"]["data_config"]["val"]):
        image = front_plots.side_by_side(runs, kind, os.path.join(plots_dir, f"compare_{kind}.png"))
        if image:
            figures.append((f"{kind}: picked point, front points and baselines", image,
                            "The same validation crops at each run's final round: LQ | each config | GT."))
    front_table = pd.DataFrame([{"trial": r.trial, **{m: r.final_metrics[m] for m in metrics}, **r.params}
                                for r in front]).to_html(index=False, float_format=_fmt)
    return figures, front_table


def _spread(front: list, picked, count: int) -> list:
    """The picked point first, then up to ``count`` front points spread along the front."""
    others = [r for r in front if picked is None or r.trial != picked.trial]
    if len(others) > count:
        others = [others[round(i * (len(others) - 1) / (count - 1))] for i in range(count)] if count > 1 else others[:1]
    return ([picked] if picked is not None else []) + others


def read_final(run_dir: str) -> tuple[str, dict[str, float], int]:
    """A single run's last round (name, metrics, step): the point its final weights give."""
    import json

    try:
        with open(os.path.join(run_dir, "summary.json")) as handle:
            rounds = json.load(handle).get("rounds") or []
    except (OSError, ValueError):
        rounds = []
    if not rounds:
        from hypir_sweep.analysis import AnalysisError

        raise AnalysisError(f"Baseline '{run_dir}' holds no validation round in its summary.json; pass the "
                            f"output_dir of a finished launch.py --single run.")
    last = rounds[-1]["metrics"]
    return os.path.basename(os.path.normpath(run_dir)), last, int(last.get("step", 0))


def _print_comparison(comparison: pd.DataFrame) -> None:
    table = Table(title="Best trial against the baselines (delta = best - baseline)")
    for column in comparison.columns:
        table.add_column(column, justify="left" if column == "metric" else "right")
    for _, row in comparison.iterrows():
        table.add_row(*(_fmt(v) for v in row.tolist()))
    console.print(table)
