"""The end of a sweep: what is kept on disk (``prune_weights``) and what is printed (``print_outcome``)."""

from __future__ import annotations

import glob
import math
import os
import shutil
from typing import Any

from hypir_core import checkpoint as ckpt
from hypir_core.terminal import BAD, make_console
from hypir_sweep.analysis import STATUS_ORDER
from hypir_sweep.dashboard import print_dashboard_command
from hypir_sweep.spec import SweepSpec
from hypir_sweep.trial import EXPLOITED, TRIAL_CONFIG

console = make_console()


def fmt_value(value: Any) -> str:
    """A parameter value as the console shows it (floats to 4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def prune_weights(spec: SweepSpec, sweep) -> list[str]:
    """Keep HYPIR weights and Tune checkpoints of the ``keep_top_k`` best ended trials only (bounds disk).

    Unfinished and errored trials keep theirs: ``--resume`` continues them from their checkpoints.
    """
    ended = [row for row in sweep.rows if row.terminated]
    keep = {row.path for row in [r for r in sweep.rows if math.isfinite(r.best)][:spec.keep_top_k]}
    if sweep.objectives:  # every point of a Pareto front may be the one a user picks
        from hypir_sweep.pareto import front

        keep |= {row.path for row in front(sweep)}
    pruned = []
    for row in ended:
        # The trainer's own working copies: a trial stopped mid-cleanup can leave them (Tune holds its checkpoints).
        ckpt.clear(row.path)
        if row.path in keep:
            continue
        for name in ckpt.WEIGHT_FILES:
            for path in (os.path.join(row.path, name), ckpt.weights_info_path(os.path.join(row.path, name))):
                if os.path.exists(path):
                    os.remove(path)
                    pruned.append(row.path)
        for folder in glob.glob(os.path.join(row.path, "checkpoint_*")) + glob.glob(os.path.join(row.path,
                                                                                             EXPLOITED + "*")):
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
        console.print("No trial reported a validation round.", style=BAD)
        return 1
    console.print(f"Best trial {best.trial} ({best.status}, {best.rounds} rounds): {spec.metric} {best.best:.4f}",
                  style="bold")
    console.print("  params: " + ", ".join(f"{k}={fmt_value(v)}" for k, v in best.params.items()))
    console.print(f"  config: {os.path.join(best.path, TRIAL_CONFIG)}")
    weights = os.path.join(best.path, ckpt.BEST_WEIGHTS)
    console.print(f"  weights (HYPIR format, its best Final_Score round): {weights}"
                  if spec.remote_storage or os.path.exists(weights) else "  weights: not kept (keep_top_k: 0)")
    if pruned:
        console.print(f"Weights kept for the top {spec.keep_top_k} trials; removed from {len(pruned)} others.")
    if spec.objectives:
        from hypir_sweep.pareto import front

        console.print(f"Pareto front ({', '.join(o.metric for o in spec.objectives)}): {len(front(sweep))} trials; "
                      f"pick one with python analyze.py {spec.sweep_dir} --pick knee (or --pick "
                      f"\"val/LPIPS<=0.08\" --maximize val/PSNR).")
    console.print(f"Study: optuna.load_study(study_name='{spec.name}', storage='{spec.optuna_storage}')")
    console.print(f"Leaderboard, best config and plots: python analyze.py {spec.sweep_dir}")
    print_dashboard_command(console, spec.sweep_dir)
    return 0 if not errors else 1
