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

from hypir_sweep import plots
from hypir_sweep.analysis import (RANK_RULE, Sweep, baseline_table, cost, importances, leaderboard, load_sweep,
                                  newest_sweep, read_baseline, write_best_config)
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
             + ", ".join(f"{counts[s]} {s}" for s in ("completed", "early-stopped", "unfinished", "diverged",
                                                       "errored") if s in counts) + ")")
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


def run_analysis(sweep_path: str | None, baselines: list[str], out_dir: str | None = None, limit: int = 20) -> int:
    """Analyse a sweep (the newest under sweep_results/ by default); print and write everything; exit code."""
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

    has_winner = any(math.isfinite(r.best) for r in sweep.rows)
    if has_winner:
        config_path, winner, weights = write_best_config(sweep, os.path.join(out_dir, "best_config.yaml"))
        console.print(f"[bold]Best: trial {winner.trial}[/bold] ({winner.status}), {sweep.metric} {winner.best:.4f}")
        console.print(f"  config, ready to train: python launch.py --single {config_path}")
        console.print(f"  weights (HYPIR format): {weights or 'not kept (outside keep_top_k)'}")
        if baselines:
            comparison = baseline_table(sweep, winner, [read_baseline(b, sweep.metric, sweep.mode) for b in baselines])
            comparison.to_csv(os.path.join(out_dir, "baseline_comparison.csv"), index=False)
            _print_comparison(comparison)
            tables.append(("Best trial against the baselines", comparison.to_html(index=False, float_format=_fmt)))
    else:
        console.print("[yellow]No trial has finished a validation round yet: no best config.[/yellow]")

    gpus = float((sweep.spec.get("resources") or {}).get("gpu", 1))
    spent = cost(sweep, gpus)
    unit = "GPU-hours" if spent["device"] == "GPU" else "CPU trial-hours"
    cost_line = (f"Cost: {spent['device_hours']:.2f} {unit} spent; early stopping saved about "
                 f"{spent['saved_hours']:.2f} {unit} against running every trial for all {sweep.max_rounds} rounds.")
    console.print(cost_line)

    sections = make_plots(sweep, table, os.path.join(out_dir, "plots"))
    report = plots.html_report(os.path.join(out_dir, "report.html"), f"Sweep {sweep.name}",
                               sections, tables + [("Cost", f"<p>{cost_line}</p>")])
    console.print(f"Leaderboard, plots and report: {out_dir} (open {report})")
    print_dashboard_command(console, sweep_path)
    return 0


def _print_comparison(comparison: pd.DataFrame) -> None:
    table = Table(title="Best trial against the baselines (delta = best - baseline)")
    for column in comparison.columns:
        table.add_column(column, justify="left" if column == "metric" else "right")
    for _, row in comparison.iterrows():
        table.add_row(*(_fmt(v) for v in row.tolist()))
    console.print(table)
