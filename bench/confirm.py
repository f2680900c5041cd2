#!/usr/bin/env python
"""Is the single-seed winner the winner by mean once its finalists are confirmed? Real quickstart sweeps.

    python bench/confirm.py [--search-seeds 0,1,2] [--top 3] [--seeds 2]

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
    args = parser.parse_args()
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


if __name__ == "__main__":
    sys.exit(main())
