#!/usr/bin/env python
"""What a sweep found: leaderboard, best config ready to train, baseline comparison, plots.

  python analyze.py                                   the newest sweep under sweep_results/
  python analyze.py sweep_results/loss_weights        a given sweep (finished, running or interrupted)
  python analyze.py sweep_results/loss_weights --baseline results/sd2_finetune_5k_improved
  python analyze.py sweep_results/pareto --pick "val/LPIPS<=0.08" --maximize val/PSNR   a point of the front
  python analyze.py sweep_results/pareto --pick knee                                   the balanced point
  python analyze.py sweep_results/loss_weights --baseline results/sd2_finetune_5k_improved --guard "PSNR>=-0.2"
                                                      export only a config losing <= 0.2 dB on every type
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
    parser.add_argument("--pick", action="append", default=[], metavar="CONDITION",
                        help="export another trial than the leaderboard's winner: 'knee' (of a Pareto sweep's front) "
                             "or a condition on its last round such as 'val/LPIPS<=0.08' (repeatable)")
    parser.add_argument("--guard", action="append", default=[], metavar="CONDITION",
                        help="with --baseline: export only a trial whose per-type METRIC minus the baseline's meets "
                             "this, e.g. 'PSNR>=-0.2' (lose at most 0.2 dB on any degradation type) or 'LPIPS<=0.01' "
                             "(repeatable; PSNR, SSIM, LPIPS or Final_Score); the best such trial is exported")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--maximize", metavar="METRIC", help="with --pick conditions: the metric to maximise")
    target.add_argument("--minimize", metavar="METRIC", help="with --pick conditions: the metric to minimise")
    args = parser.parse_args(argv)
    if (args.maximize or args.minimize) and not args.pick:
        parser.error("--maximize/--minimize choose among the trials that --pick conditions admit; add --pick")

    from hypir_core.errors import HypirError
    from hypir_sweep.report import run_analysis

    chosen = (args.maximize, "max") if args.maximize else (args.minimize, "min") if args.minimize else None
    try:
        return run_analysis(args.sweep, args.baseline, args.out, args.top, pick=args.pick, target=chosen,
                            guards=args.guard)
    except HypirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
