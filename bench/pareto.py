#!/usr/bin/env python
"""Do Pareto sweeps find the front? FIFO, scalar ASHA and multi-objective ASHA replayed against the ground truth.

    python bench/pareto.py [--seeds 20] [--objectives val/Blur/PSNR:max,val/Snow/PSNR:max]
                           [--schedulers fifo,asha,moasha] [--out bench/results/pareto]
    python bench/pareto.py --from-logs     report on the logs.json of an earlier run in --out

Each scheduler runs as a real Ray Tune experiment of a Pareto sweep (the sweep's own assembly: the
multi-objective TPE study, SweepSearch, the scheduler), over the grid space of ``bench/ground_truth.py``,
with the replay trainable of ``bench/search.py`` (each config seen through one of its seeds, drawn per
config and search seed). Scalar ASHA stops by ``val/Final_Score``; moasha by the objectives' front.

What a Pareto sweep gives the user is its full-budget trials' front. Its quality after some compute is
the hypervolume that the *true* objectives (the table's mean over seeds at the last round) of the configs
trained to the full budget so far dominate, as a share of what the grid's true front dominates; the
reference point is the grid's nadir (each objective's worst mean over the configs). Prints median and
quartiles per scheduler and budget, and how many of the grid's true front configs were found; writes CSV
and a PNG of hypervolume against compute.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import ground_truth  # noqa: E402
import search  # noqa: E402

DEFAULT_OBJECTIVES = "val/Blur/PSNR:max,val/Snow/PSNR:max"  # of the per-type pairs, the one with the largest true front
SCHEDULERS = {"fifo": {"type": "fifo"}, "asha": search.ASHA, "moasha": {**search.ASHA, "type": "moasha"}}
FRACTIONS = (0.1, 0.25, 0.5)


def parse_objectives(text: str) -> list[tuple[str, str]]:
    pairs = [part.rsplit(":", 1) for part in text.split(",")]
    if len(pairs) < 2 or any(len(p) != 2 or p[1] not in ("min", "max") for p in pairs):
        raise SystemExit(f"--objectives {text!r}: give two or three metric:max or metric:min, comma-separated.")
    return [(m, d) for m, d in pairs]


def true_points(table: search.Table, objectives) -> dict[str, tuple[float, ...]]:
    """Each config's objectives as values to minimise: its mean over seeds at the last round (nan if one failed)."""
    points = {}
    for config, by_seed in table.rounds.items():
        finals = [rounds[-1] for rounds in by_seed.values() if len(rounds) == search.MAX_ROUNDS]
        if len(finals) < len(by_seed) or not all(m in f for f in finals for m, _ in objectives):
            points[config] = tuple(math.nan for _ in objectives)
            continue
        points[config] = tuple(statistics.mean(f[m] for f in finals) * (1 if d == "min" else -1) for m, d in objectives)
    return points


def hypervolume(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    import numpy as np
    from optuna._hypervolume import compute_hypervolume  # what hypir_sweep.pareto uses

    losses = np.array([p for p in points if all(math.isfinite(v) for v in p)]).reshape(-1, len(reference))
    better = losses[np.all(losses < np.array(reference), axis=1)]
    return float(compute_hypervolume(better, np.array(reference))) if len(better) else 0.0


def completed_by(log: list[list], budget: int) -> list[str]:
    """The configs trained to the full budget within the first ``budget`` results."""
    return sorted({config for config, round_number, score in log[:budget]
                   if round_number >= search.MAX_ROUNDS and not math.isnan(score)})


def run(table: search.Table, name: str, seed: int, budget: int, work: str, objectives) -> list[list]:
    from hypir_sweep.assembly import make_scheduler, make_searcher, tune_space

    spec = search._spec(table, work, f"{name}-{seed}", SCHEDULERS[name], {"seed": seed}, objectives=objectives)
    built = make_searcher(spec), make_scheduler(spec), tune_space(spec)
    return [list(entry) for entry in search.run_strategy(table, name, seed, budget, work, built=built)]


def report(table: search.Table, logs: dict[str, list[list]], objectives, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from hypir_sweep.moasha import fronts

    truth = true_points(table, objectives)
    feasible = {c: p for c, p in truth.items() if all(math.isfinite(v) for v in p)}
    reference = tuple(max(p[i] for p in feasible.values()) for i in range(len(objectives)))
    names = list(feasible)
    front = {names[i] for i in fronts(np.array([feasible[c] for c in names]))[0]}
    best = hypervolume([feasible[c] for c in front], reference)
    full = len(table.runs) * search.MAX_ROUNDS
    budgets = [round(f * full) for f in FRACTIONS]
    print(f"objectives {', '.join(f'{m} ({d})' for m, d in objectives)}; the grid's true front: {len(front)} of "
          f"{len(feasible)} configs, hypervolume {best:.4g} beyond the grid's nadir")
    rows, curves = [], {}
    steps = list(range(8, max(budgets) + 1, 8))
    for name, runs in logs.items():
        ratios = {b: [hypervolume([truth[c] for c in completed_by(log, b)], reference) / best for log in runs]
                  for b in sorted(set(budgets + steps))}
        curves[name] = [np.percentile(ratios[b], (25, 50, 75)) for b in steps]
        for b in budgets:
            found = [len(front & set(completed_by(log, b))) for log in runs]
            q1, median, q3 = np.percentile(ratios[b], (25, 50, 75))
            rows.append({"scheduler": name, "budget": b, "fraction": b / full, "median_hv": median, "q1": q1, "q3": q3,
                         "mean_hv": float(np.mean(ratios[b])), "front_found_mean": float(np.mean(found)),
                         "front_size": len(front), "seeds": len(runs)})
    os.makedirs(out, exist_ok=True)
    search.write_csv(os.path.join(out, "pareto.csv"), rows)
    print("share of the grid's true front hypervolume dominated by the full-budget configs' true points: median "
          "[quartiles] (mean); mean of the true front's configs found:")
    print(f"{'scheduler':10s} " + " ".join(f"{f'{b} rounds ({b / full:.0%})':>36s}" for b in budgets))
    for name in logs:
        cells = [r for r in rows if r["scheduler"] == name]
        print(f"{name:10s} " + " ".join(f"{c['median_hv']:6.3f} [{c['q1']:.3f}, {c['q3']:.3f}] ({c['mean_hv']:.3f}) "
                                        f"{c['front_found_mean']:3.1f}/{len(front)}" for c in cells))
    fig, ax = plt.subplots(figsize=(8, 5))
    x = [100 * s / full for s in steps]
    for name, curve in curves.items():
        ax.plot(x, [c[1] for c in curve], marker=".", label=name)
        ax.fill_between(x, [c[0] for c in curve], [c[2] for c in curve], alpha=0.12)
    ax.set_xlabel("compute, % of running every grid config to the full budget")
    ax.set_ylabel("hypervolume of the found front / the grid's true front")
    ax.set_title(f"Pareto sweeps on the {table.meta['grid']} grid: {' vs '.join(m for m, _ in objectives)}\n"
                 f"(median and quartiles over {len(next(iter(logs.values())))} search seeds)", fontsize=10)
    ax.set_ylim(0, 1.02)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "pareto.png"), dpi=110)
    print(f"wrote {os.path.join(out, 'pareto.csv')} and pareto.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(ground_truth.TABLES["quickstart"]))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--objectives", default=DEFAULT_OBJECTIVES)
    parser.add_argument("--schedulers", default="fifo,asha,moasha")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "pareto"))
    parser.add_argument("--from-logs", action="store_true", help="report on the logs.json of an earlier run in --out")
    args = parser.parse_args()
    objectives = parse_objectives(args.objectives)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    import logging

    import optuna
    import ray

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)
    table = search.load_table(Path(args.table))
    missing = [m for m, _ in objectives if not any(m in r for by_seed in table.rounds.values()
                                                   for rounds in by_seed.values() for r in rounds)]
    if missing:
        raise SystemExit(f"{table.path.name} has no column {missing[0]}; rebuild it with python bench/ground_truth.py "
                         f"(which records {', '.join(ground_truth.METRICS)}).")
    if args.from_logs:
        saved = json.loads(Path(args.out, "logs.json").read_text())
        report(table, saved["logs"], [tuple(o) for o in saved["objectives"]], args.out)
        return 0
    budget = round(max(FRACTIONS) * len(table.runs) * search.MAX_ROUNDS)
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    logs: dict[str, list[list]] = defaultdict(list)
    started = time.time()
    with tempfile.TemporaryDirectory() as work:
        for name in args.schedulers.split(","):
            for seed in range(args.seeds):
                logs[name].append(run(table, name, seed, budget, work, objectives))
            print(f"{name}: done ({time.time() - started:.0f} s)", flush=True)
    ray.shutdown()
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "logs.json"), "w") as handle:
        json.dump({"table": table.path.name, "objectives": objectives, "logs": logs}, handle)
    report(table, logs, objectives, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
