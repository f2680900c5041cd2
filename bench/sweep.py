#!/usr/bin/env python
"""Time the quickstart sweep end to end (Ray start, 8 trials, ASHA) and print what early stopping did.

    python bench/sweep.py [--spec sweeps/quickstart.yaml]

Runs in a temporary folder, so nothing is left in sweep_results/. Target: under 5 minutes on 2 CPU cores.
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
    args = parser.parse_args()
    from hypir_sweep.analysis import cost, load_sweep
    from hypir_sweep.spec import load_spec

    spec = load_spec(args.spec)
    with tempfile.TemporaryDirectory() as work:
        started = time.time()
        run = subprocess.run([sys.executable, str(ROOT / "launch.py"), os.path.abspath(args.spec), "--no-progress"],
                             cwd=work, capture_output=True, text=True)
        wall = time.time() - started
        if run.returncode != 0:
            print(run.stdout[-3000:], run.stderr[-3000:])
            return run.returncode
        sweep = load_sweep(os.path.join(work, "sweep_results", spec.name))
        statuses = [r.status for r in sweep.rows]
        spent = cost(sweep, spec.resources.gpu)
        best = max(r.best for r in sweep.rows)
    print(f"trials: {len(statuses)} ({statuses.count('completed')} completed, "
          f"{statuses.count('early-stopped')} early-stopped), rounds: {sum(r.rounds for r in sweep.rows)} of "
          f"{len(statuses) * sweep.max_rounds} possible")
    print(f"best {sweep.metric}: {best:.4f}")
    print(f"trial time: {spent['trial_hours'] * 60:.1f} min; early stopping saved about {spent['saved_hours'] * 60:.1f} min")
    print(f"wall time, launch to exit: {wall:.0f} s ({wall / 60:.2f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
