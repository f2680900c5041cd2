"""Single-run mode: train one config (a baseline), or only check it with ``--dry-run``."""

from __future__ import annotations

import logging
import os

import yaml
from rich.table import Table
from rich.text import Text

from hypir_core.config import config_to_dict, load_config
from hypir_core.errors import HypirError
from hypir_core.preflight import preflight, preview_degradations
from hypir_core.reporting import JsonSummaryReporter
from hypir_core.terminal import BAD, OK, WARN, make_console, status_cell

console = make_console()


def dry_run(config_path: str, overrides: list[str]) -> int:
    """Validate config, data, model and weights availability; print the resolved config. Trains nothing.

    For HQ-only data it also writes a PNG of degraded pairs at the configured settings and says where."""
    cfg = load_config(config_path, overrides)
    console.print(f"Resolved config ({cfg.source}, experiment '{cfg.name}'):", style="bold")
    console.print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False).rstrip())
    table = Table(title="Preflight checks")
    for column in ("check", "status", "detail"):
        table.add_column(column, overflow="fold")
    checks = preflight(cfg)
    for check in checks:
        table.add_row(check.name, Text(*status_cell(check.ok)), check.detail)
    console.print(table)
    failed = [c for c in checks if not c.ok]
    if all(c.ok for c in checks if c.name == "training data"):
        try:
            shown = preview_degradations(cfg)
        except (HypirError, OSError) as exc:
            failed.append(exc)
            console.print(f"Could not write the degradation preview: {exc}", style=BAD)
        else:
            if shown is not None:
                console.print(f"Degraded training pairs at the configured settings ({shown[1]} rows of target | LQ): "
                              f"{shown[0]}")
    console.print("Dry run found problems." if failed else "Ready to train.", style=BAD if failed else OK)
    return 2 if failed else 0


def run_single(config_path: str, overrides: list[str], progress_bar: bool = True) -> int:
    """Train one config, keep output_dir/summary.json current, print a summary table; return an exit code."""
    from hypir_core.trainer import train

    cfg = load_config(config_path, overrides)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hypir_core").setLevel(logging.INFO)
    console.print(f"Training '{cfg.name}' for {cfg.max_train_steps} steps into {cfg.output_dir}")
    reporter = JsonSummaryReporter(cfg.output_dir, config_to_dict(cfg))
    try:
        summary = train(cfg, reporter, progress_bar=progress_bar)
    except KeyboardInterrupt:
        reporter.finish("interrupted")
        console.print("Interrupted. Resume with resume_from_checkpoint=latest.", style=WARN)
        return 130
    except HypirError as exc:
        reporter.finish(f"failed: {exc}")
        raise
    except Exception as exc:
        reporter.finish(f"crashed: {type(exc).__name__}: {exc}")
        raise
    rounds = [{"round": i + 1, "step": r["step"], "metrics": r["metrics"]} for i, r in enumerate(summary.rounds)]
    reporter.finish(summary.status, rounds=rounds, best_round=summary.best_round, weights=summary.weights,
                    steps=summary.steps, skipped_images=summary.skipped_images, seconds=round(summary.seconds, 1))
    print_summary(summary)
    return 0 if summary.status == "completed" else 3


def print_summary(summary) -> None:
    """A table of every validation round, the best marked, then where the weights are."""
    table = Table(title=f"Run {summary.status} after {summary.steps} steps ({summary.seconds:.0f} s)")
    for column in ("step", "Final_Score", "PSNR", "SSIM", "LPIPS"):
        table.add_column(column, justify="right")
    best_step = summary.best_round["step"] if summary.best_round else None
    for r in summary.rounds:
        m = r["metrics"]
        mark = " *" if r["step"] == best_step else ""
        table.add_row(f"{r['step']}{mark}", f"{m['val/Final_Score']:.4f}", f"{m['val/PSNR']:.3f}",
                      f"{m['val/SSIM']:.4f}", f"{m['val/LPIPS']:.4f}")
    console.print(table)
    for kind, path in summary.weights.items():
        console.print(f"{kind} weights (HYPIR format): {path}")
    console.print(f"summary: {os.path.join(summary.output_dir, 'summary.json')}")
    if summary.skipped_images:
        console.print(f"{summary.skipped_images} unreadable training images were skipped.", style=WARN)
