#!/usr/bin/env python
"""Time the quickstart sweep end to end (Ray start, 8 trials, ASHA) and print what early stopping did.

    python bench/sweep.py [--spec sweeps/quickstart.yaml] [--compare-reuse]

Runs in a temporary folder, so nothing is left in sweep_results/. Target: under 5 minutes on 2 CPU cores.

Also the per-trial overhead: the part of a trial's time that is neither training nor validation
(imports, model build, validation-set cache, checkpoint copies, reporting). A trial's time runs from
the start of its attempt (summary.json) to its last result (result.json); its work is its rounds
times the median time of a round after the first (the first also pays the start-up).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "sweeps" / "quickstart.yaml"))
    parser.add_argument("--compare-reuse", action="store_true",
                        help="run it twice: a fresh process per trial, then processes reused (the default)")
    args = parser.parse_args()
    from hypir_sweep.analysis import cost, load_sweep
    from hypir_sweep.spec import load_spec

    spec = load_spec(args.spec)
    settings = [("one process per trial", "0"), ("processes reused", "1")] if args.compare_reuse else [(None, None)]
    for label, reuse in settings:
        if label:
            print(f"--- {label} (HYPIR_SWEEP_REUSE_ACTORS={reuse})")
        env = {**os.environ, "HYPIR_SWEEP_REUSE_ACTORS": reuse} if reuse else None
        with tempfile.TemporaryDirectory() as work:
            started = time.time()
            run = subprocess.run([sys.executable, str(ROOT / "launch.py"), os.path.abspath(args.spec),
                                  "--no-progress"], cwd=work, capture_output=True, text=True, env=env)
            wall = time.time() - started
            if run.returncode != 0:
                print(run.stdout[-3000:], run.stderr[-3000:])
                return run.returncode
            sweep = load_sweep(os.path.join(work, "sweep_results", spec.name))
            statuses = [r.status for r in sweep.rows]
            spent = cost(sweep, spec.resources.gpu)
            best = max(r.best for r in sweep.rows)
            overhead = trial_overhead(sweep)
        print(f"trials: {len(statuses)} ({statuses.count('completed')} completed, "
              f"{statuses.count('early-stopped')} early-stopped), rounds: {sum(r.rounds for r in sweep.rows)} of "
              f"{len(statuses) * sweep.max_rounds} possible")
        print(f"best {sweep.metric}: {best:.4f}")
        print(f"trial time: {spent['trial_hours'] * 60:.1f} min; early stopping saved about "
              f"{spent['saved_hours'] * 60:.1f} min")
        print(f"wall time, launch to exit: {wall:.0f} s ({wall / 60:.2f} min)")
        print(f"per-trial overhead: {overhead['fraction']:.0%} of trial time ({overhead['overhead_s']:.1f} s of "
              f"{overhead['trial_s']:.1f} s per trial on average; a round of work takes {overhead['round_s']:.1f} s)")
    return 0


def trial_overhead(sweep) -> dict:
    """Mean trial time, mean overhead in it, and the overhead fraction over all trials of a sweep."""
    import json
    import statistics

    trials = []
    for row in sweep.rows:
        with open(os.path.join(row.path, "summary.json")) as handle:
            attempts = json.load(handle).get("attempts") or []
        with open(os.path.join(row.path, "result.json")) as handle:
            results = [json.loads(line) for line in handle if line.strip()]
        rounds = [r for r in results if sweep.metric in r]
        if not attempts or not rounds:
            continue
        trials.append((rounds[-1]["timestamp"] - attempts[0]["started"], [r["time_this_iter_s"] for r in rounds]))
    later = [seconds for _, times in trials for seconds in times[1:]]
    round_s = statistics.median(later)
    total = sum(wall for wall, _ in trials)
    work = sum(len(times) * round_s for _, times in trials)
    return {"fraction": 1 - work / total, "trial_s": total / len(trials), "overhead_s": (total - work) / len(trials),
            "round_s": round_s}


if __name__ == "__main__":
    sys.exit(main())
