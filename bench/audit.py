#!/usr/bin/env python
"""The early-stopping audit against ground truth: what it says of quickstart-sized sweeps, what is true of the grid.

    python bench/audit.py [--seeds 20] [--table bench/data/quickstart_grid.csv]

Truth: ``hypir_sweep.audit``'s measures over every config of the ground-truth grid (every config ran the
full budget with several seeds; a config's score at a round is its mean over seeds, its best the mean of
its seeds' best rounds): Spearman's rho of each round with the best and the final round, the smallest
grace_period at rho 0.8, and how often the quickstart's ASHA (grace 1, halving), replayed on those
curves in random arrival orders, would stop the grid's best config.

Estimates: the shipped default (TPE + ASHA, 2 trials at a time) replayed over the grid through the real
Ray Tune, Optuna and scheduler code (bench/search.py's replay, the table's rounds instead of training),
for ``--seeds`` search seeds, stopped at the quickstart's compute (32 trial-rounds) and at a quarter of
the grid's (81). The audit is computed on each replayed sweep's full-budget trials as analyze.py would,
from the rounds that sweep observed (one seed per config); printed: how often it has enough trials, and
its rho per round against the truth.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from search import MAX_ROUNDS, load_table, run_strategy  # noqa: E402

BUDGETS = (32, 81)
ASHA = {"type": "asha", "grace_period": 1, "reduction_factor": 2}


def rows_of(curves: dict[str, list[float]], order: list[str], best: dict[str, float] | None = None):
    """The configs as analyze.py's full-budget trials, in ``order``, with the given curves (and best values)."""
    from hypir_sweep.analysis import TrialRow

    best = best or {key: max(curve) for key, curve in curves.items()}
    return [TrialRow(trial=key, status="completed", rounds=MAX_ROUNDS, best=best[key], last=curves[key][-1],
                     best_metrics={}, params={}, seconds=0.0, path="", curve=list(enumerate(curves[key], start=1)),
                     started=float(index)) for index, key in enumerate(order)]


def measures(rows) -> tuple[list[float], list[float], int | None]:
    from hypir_sweep import audit

    table = audit.correlations(rows, MAX_ROUNDS)
    return (table["spearman vs best round"].tolist(), table["spearman vs final round"].tolist(),
            audit.smallest_grace(table))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(ROOT / "bench" / "data" / "quickstart_grid.csv"))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--figure", default=str(ROOT / "bench" / "results" / "audit" / "grid_rank_correlation.png"),
                        help="where the grid's correlation per round is drawn (analyze.py's audit figure)")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import logging

    import numpy as np
    import optuna
    import ray

    from hypir_sweep import audit

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)
    table = load_table(Path(args.table))
    keys = sorted(c for c, v in table.truth.items() if math.isfinite(v))
    means = {c: table.mean_curve(c) for c in keys}
    truth_rows = rows_of(means, keys, table.truth)
    by_best, by_final, grace = measures(truth_rows)
    winner = max(truth_rows, key=lambda r: r.best).trial
    from hypir_sweep import trust_plots

    trust_plots.rank_correlation(audit.correlations(truth_rows, MAX_ROUNDS), audit.LEVEL, ASHA["grace_period"], grace,
                                 args.figure)
    rng = np.random.default_rng(0)
    stopped = [audit.replay(truth_rows, list(rng.permutation(keys)), ASHA, "m", "max", MAX_ROUNDS)[winner]
               for _ in range(audit.ORDERS)]
    print(f"truth over all {len(keys)} grid configs (each round's mean over {len(table.seeds)} seeds): rho vs best "
          f"round "
          + ", ".join(f"r{i + 1} {v:.2f}" for i, v in enumerate(by_best)) + "; vs final round "
          + ", ".join(f"r{i + 1} {v:.2f}" for i, v in enumerate(by_final))
          + f"; smallest grace_period at rho {audit.LEVEL:g}: {grace}")
    print(f"  ASHA (grace 1, halving) on the {len(keys)} mean curves stops the grid's best ({winner}) in "
          f"{np.mean([s is not None for s in stopped]):.0%} of {audit.ORDERS} random arrival orders "
          f"(at round 1: {np.mean([s == 1 for s in stopped]):.0%}, round 2: {np.mean([s == 2 for s in stopped]):.0%})")

    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    found = {b: [] for b in BUDGETS}
    with tempfile.TemporaryDirectory() as work:
        for seed in range(args.seeds):
            log = run_strategy(table, "default", seed, max(BUDGETS), work)
            observed = {c: table.observed(c, seed)[0] for c in keys}
            for budget in BUDGETS:
                seen, order = {}, []
                for config, round_number, _ in log[:budget]:
                    if config not in seen:
                        order.append(config)
                    seen[config] = max(seen.get(config, 0), round_number)
                full = [c for c in order if seen[c] >= MAX_ROUNDS and c in observed]
                rows = rows_of(observed, full)
                if len(rows) < audit.MIN_TRIALS:
                    found[budget].append(None)
                    continue
                best_rho, _, smallest = measures(rows)
                top = max(rows, key=lambda r: r.best).trial
                hit = audit.replay(rows, full, ASHA, "m", "max", MAX_ROUNDS)[top] is not None
                found[budget].append((len(rows), best_rho, smallest, hit))
    ray.shutdown()
    for budget in BUDGETS:
        results = found[budget]
        usable = [r for r in results if r is not None]
        print(f"\nreplayed default sweeps at {budget} trial-rounds, {len(results)} seeds: the audit has >= "
              f"{audit.MIN_TRIALS} full-budget trials in {len(usable)} "
              f"(full-budget trials per sweep: {sorted(r[0] for r in usable) if usable else '-'}; the rest say "
              f"'too few')")
        if not usable:
            continue
        for index in range(MAX_ROUNDS):
            values = [r[1][index] for r in usable if math.isfinite(r[1][index])]
            print(f"  round {index + 1}: rho vs best, median {np.median(values):.2f} [min {min(values):.2f}, "
                  f"max {max(values):.2f}] against the grid's {by_best[index]:.2f}")
        graces = [r[2] for r in usable]
        print(f"  smallest grace_period at rho {audit.LEVEL:g}: "
              + ", ".join(f"{g}: {graces.count(g)}" for g in sorted(set(graces), key=lambda g: (g is None, g or 0)))
              + f" (grid: {grace}); replayed ASHA in start order stops the sweep's own winner in "
              f"{sum(r[3] for r in usable)} of {len(usable)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
