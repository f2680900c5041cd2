#!/usr/bin/env python
"""What a sweep found: leaderboard, best config ready to train, baseline comparison, plots.

  python analyze.py                                   the newest sweep under sweep_results/
  python analyze.py sweep_results/loss_weights        a given sweep (finished, running or interrupted)
  python analyze.py sweep_results/loss_weights --baseline results/sd2_finetune_5k_improved
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="analyze.py", description=__doc__.splitlines()[0])
    parser.add_argument("sweep", nargs="?", default=None,
                        help="sweep folder (sweep_results/<name> or a storage URI); default: the newest")
    parser.add_argument("--baseline", action="append", default=[], metavar="RUN_DIR",
                        help="output_dir of a launch.py --single run to compare with (repeatable)")
    parser.add_argument("--out", default=None, help="where to write the analysis (default: <sweep>/analysis)")
    parser.add_argument("--top", type=int, default=20, help="rows of the leaderboard to print (all go to the CSV)")
    args = parser.parse_args(argv)

    from hypir_core.errors import HypirError
    from hypir_sweep.report import run_analysis

    try:
        return run_analysis(args.sweep, args.baseline, args.out, args.top)
    except HypirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
