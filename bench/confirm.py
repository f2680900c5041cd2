#!/usr/bin/env python
"""Is the single-seed winner the winner by mean once its finalists are confirmed? Real quickstart sweeps.

    python bench/confirm.py [--search-seeds 0,1,2] [--top 3] [--seeds 2]
    python bench/confirm.py --replay [--search-seeds 20] [--top 3]     against the multi-seed ground truth

With ``--replay``: the shipped default replayed over the ground-truth grid (bench/search.py: each config
seen through one of its seeds, drawn per search seed), stopped at the quickstart's compute and at a quarter
of the grid's; its top full-budget configs are then "confirmed" with the table's other seeds (the table holds
the base seed and the next two: what ``confirm: {seeds: 2}`` runs), so each finalist's mean is the table's
truth. Printed: how often the single-seed winner is the winner by mean, Welch's test between the two best
means, and the regret (against the table's best mean) of what each export rule picks.

For each search seed: ``python launch.py`` on sweeps/quickstart.yaml with ``search.seed`` set and
``confirm: {top, seeds}`` (training, not replay; a temporary folder, no tracking), then the sweep read
back with hypir_sweep.analysis: the leaderboard's winner (one seed), the finalists' ranking by mean
over seeds (hypir_sweep.finalists), Welch's p for winner against runner-up, and the early-stopping
audit's lines for that sweep.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search-seeds", default="0,1,2")
    parser.add_argument("--top", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--figures", default=str(ROOT / "bench" / "results" / "confirm"),
                        help="where each sweep's finalists figure goes (finalists-<search seed>.png)")
    parser.add_argument("--replay", action="store_true", help="replay against bench/data/quickstart_grid.csv")
    args = parser.parse_args()
    if args.replay:
        return replay(int(args.search_seeds) if "," not in args.search_seeds else 20, args.top)
    from hypir_sweep import audit, finalists
    from hypir_sweep.analysis import load_sweep

    same = 0
    seeds = [int(s) for s in args.search_seeds.split(",")]
    for search_seed in seeds:
        with tempfile.TemporaryDirectory() as work:
            raw = yaml.safe_load((ROOT / "sweeps" / "quickstart.yaml").read_text())
            raw.update(name=f"confirm-{search_seed}", base_config=str(ROOT / "configs" / "tiny.yaml"),
                       tracking={"report_to": "none"}, confirm={"top": args.top, "seeds": args.seeds})
            raw["search"].update(seed=search_seed, points_to_evaluate=[str(ROOT / "configs" / "tiny.yaml")])
            spec = Path(work) / "spec.yaml"
            spec.write_text(yaml.safe_dump(raw))
            started = time.time()
            run = subprocess.run([sys.executable, str(ROOT / "launch.py"), str(spec), "--no-progress"], cwd=work,
                                 capture_output=True, text=True)
            if run.returncode != 0:
                print(run.stdout[-3000:], run.stderr[-3000:])
                return run.returncode
            sweep = load_sweep(os.path.join(work, "sweep_results", raw["name"]))
            ranked = finalists.finalists(sweep)
            from hypir_sweep import trust_plots

            trust_plots.finalist_intervals(ranked, sweep.metric, os.path.join(args.figures,
                                                                              f"finalists-{search_seed}.png"))
            leader = sweep.rows[0]
            print(f"search seed {search_seed}: {time.time() - started:.0f} s, {len(sweep.rows)} search trials "
                  f"({sum(r.status == 'completed' for r in sweep.rows)} full budget), {len(sweep.confirm_rows)} "
                  f"confirmation trials")
            print(f"  single-seed winner: trial {leader.trial} {leader.best:.4f} {leader.params}")
            for line in finalists.summary_lines(sweep) + audit.audit(sweep).lines:
                print(f"  {line}")
            agree = bool(ranked) and ranked[0].row.trial == leader.trial
            same += agree
            print(f"  the winner by mean is {'the same' if agree else 'another'} config", flush=True)
    print(f"\nthe single-seed winner was the winner by mean in {same} of {len(seeds)} search seeds "
          f"(top {args.top}, {args.seeds} new seeds each)")
    return 0


def replay(search_seeds: int, top: int) -> int:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import logging
    import statistics

    import optuna
    import ray

    sys.path.insert(0, str(ROOT / "bench"))
    import ground_truth
    from search import MAX_ROUNDS, exported, load_table, run_strategy

    from hypir_sweep.analysis import TrialRow
    from hypir_sweep.finalists import ALPHA, Finalist, welch

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("ray").setLevel(logging.ERROR)
    table = load_table(ground_truth.TABLES["quickstart"])
    budgets = (32, 81)
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    found = {b: [] for b in budgets}
    with tempfile.TemporaryDirectory() as work:
        for seed in range(search_seeds):
            log = run_strategy(table, "default", seed, max(budgets), work)
            for budget in budgets:
                best: dict[str, tuple[int, float]] = {}
                for config, round_number, score in log[:budget]:
                    done, value = best.get(config, (0, -1e9))
                    best[config] = (max(done, round_number), max(value, score))
                full = sorted((c for c, (done, _) in best.items() if done >= MAX_ROUNDS), key=lambda c: -best[c][1])
                if len(full) < 2:
                    found[budget].append(None)
                    continue
                finalists = []
                for config in full[:top]:
                    scores = [(s, max(curve)) for s, (curve, _) in sorted(table.runs[config].items())]
                    finalists.append(Finalist(TrialRow(config, "completed", MAX_ROUNDS, best[config][1], 0.0, {}, {},
                                                       0.0, ""), scores))
                finalists.sort(key=lambda f: -f.mean)
                single = exported(log, budget)
                found[budget].append((single == finalists[0].row.trial, welch(finalists[0], finalists[1]) < ALPHA,
                                      table.regret(single), table.regret(finalists[0].row.trial)))
    ray.shutdown()
    for budget in budgets:
        usable = [r for r in found[budget] if r is not None]
        print(f"{budget} trial-rounds, {len(found[budget])} search seeds ({len(usable)} with 2+ full-budget trials; "
              f"top {top} confirmed with the table's 3 seeds):")
        print(f"  the single-seed winner is the winner by mean in {sum(r[0] for r in usable)} of {len(usable)}; the "
              f"best mean is distinguishable from the runner-up's (Welch, 5%) in {sum(r[1] for r in usable)}")
        print(f"  regret against the table's best mean, median [mean]: single-seed winner "
              f"{statistics.median(r[2] for r in usable):.3f} [{statistics.mean(r[2] for r in usable):.3f}], "
              f"winner by mean {statistics.median(r[3] for r in usable):.3f} "
              f"[{statistics.mean(r[3] for r in usable):.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
