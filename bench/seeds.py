#!/usr/bin/env python
"""Seed-to-seed spread of Final_Score: a few configs trained with several seeds at the quickstart's budget.

    python bench/seeds.py [--seeds 5] [--out bench/results/seeds.csv] [--spec sweeps/quickstart.yaml]
    python bench/seeds.py --from-csv bench/results/seeds.csv     summarise (and draw) a finished run again

Each config trains exactly as a quickstart trial does (``SweepSpec.trial_config``), once per seed (the
base config's seed 231 and the next ones: what a confirmation phase runs), one after the other in this
process. The configs are the three best of the ground-truth grid (bench/data/quickstart_grid.csv, one
seed, built by an older trainer): whether they stay apart over seeds is the question. Prints per config
the best-round and final-round Final_Score: mean, sample sd, range, 95% t interval, and Welch's p of each
pair; writes every round as CSV and draws the configs as analyze.py draws finalists (``--figure``).
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypir_core.metrics import FINAL_SCORE  # noqa: E402

CONFIGS = {  # the grid's top three by best round
    "grid #1": {"lambda_l2": 2.0, "lambda_l1": 0.5, "lambda_gan": 1.0, "lr_G": 3.0e-3},
    "grid #2": {"lambda_l2": 0.5, "lambda_l1": 0.5, "lambda_gan": 0.1, "lr_G": 3.0e-3},
    "grid #3": {"lambda_l2": 2.0, "lambda_l1": 4.0, "lambda_gan": 0.1, "lr_G": 3.0e-3},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "seeds.csv"))
    parser.add_argument("--spec", default=str(ROOT / "sweeps" / "quickstart.yaml"))
    parser.add_argument("--from-csv", help="summarise this CSV of an earlier run instead of training")
    parser.add_argument("--figure", default=str(ROOT / "bench" / "results" / "seeds.png"))
    args = parser.parse_args()
    if args.from_csv:
        results: dict[str, list[tuple[int, list[float]]]] = {}
        with open(args.from_csv) as handle:
            rows = list(csv.DictReader(handle))
        for name in dict.fromkeys(r["config"] for r in rows):
            for seed in dict.fromkeys(int(r["seed"]) for r in rows if r["config"] == name):
                results.setdefault(name, []).append((seed, [float(r[FINAL_SCORE]) for r in rows
                                                            if r["config"] == name and int(r["seed"]) == seed]))
        summarise(results, args.figure)
        return 0
    from hypir_core.trainer import train
    from hypir_sweep.spec import load_spec

    logging.getLogger("hypir_core").setLevel(logging.WARNING)
    spec = load_spec(args.spec)
    seeds = [spec.base.seed + i for i in range(args.seeds)]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[tuple[int, list[float]]]] = {}
    started = time.time()
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["config", "seed", "round", "step", FINAL_SCORE])
        writer.writeheader()
        for name, params in CONFIGS.items():
            for seed in seeds:
                with tempfile.TemporaryDirectory() as work:
                    cfg = replace(spec.trial_config({**params, "seed": seed}, os.path.join(work, "trial"),
                                                    name="seeds"), report_to="none")
                    rounds = []
                    train(cfg, lambda metrics, _: rounds.append(metrics), progress_bar=False)
                scores = [float(m[FINAL_SCORE]) for m in rounds]
                results.setdefault(name, []).append((seed, scores))
                for index, metrics in enumerate(rounds, start=1):
                    writer.writerow({"config": name, "seed": seed, "round": index, "step": metrics["step"],
                                     FINAL_SCORE: f"{metrics[FINAL_SCORE]:.6f}"})
                handle.flush()
                print(f"{name} seed {seed}: best {max(scores):.4f}, final {scores[-1]:.4f} "
                      f"({time.time() - started:.0f} s)", flush=True)
    print(f"\n{len(CONFIGS)} configs x {len(seeds)} seeds ({seeds[0]}-{seeds[-1]}) in {time.time() - started:.0f} s")
    summarise(results, args.figure)
    return 0


def summarise(results: dict[str, list[tuple[int, list[float]]]], figure: str) -> None:
    """Mean +- sd [min, max] and the 95% t interval per config, Welch's p per pair; the finalists' figure."""
    from hypir_sweep.analysis import TrialRow
    from hypir_sweep.finalists import Finalist, welch
    from hypir_sweep.trust_plots import finalist_intervals

    print(f"{FINAL_SCORE}, mean +- sd [min, max], 95% t interval:")
    entries = {}
    for name, runs in results.items():
        for label, pick in (("best round", max), ("final round", lambda s: s[-1])):
            values = [pick(scores) for _, scores in runs]
            entry = Finalist(TrialRow(name, "completed", 0, 0.0, 0.0, {}, {}, 0.0, ""),
                             [(seed, pick(scores)) for seed, scores in runs])
            entries.setdefault(label, []).append(entry)
            print(f"  {name} {CONFIGS.get(name, '')}: {label} {statistics.mean(values):.3f} +- "
                  f"{statistics.stdev(values):.3f} [{min(values):.3f}, {max(values):.3f}], 95% "
                  f"[{entry.mean - entry.half_width:.3f}, {entry.mean + entry.half_width:.3f}]")
    for label, group in entries.items():
        pairs = [(a, b) for i, a in enumerate(group) for b in group[i + 1:]]
        print(f"  Welch's p ({label}): " + ", ".join(f"{a.row.trial} vs {b.row.trial} {welch(a, b):.2f}"
                                                    for a, b in pairs))
    ranked = sorted(entries["best round"], key=lambda e: -e.mean)
    Path(figure).parent.mkdir(parents=True, exist_ok=True)
    print(f"figure: {finalist_intervals(ranked, FINAL_SCORE, figure)}")


if __name__ == "__main__":
    sys.exit(main())
