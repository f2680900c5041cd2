#!/usr/bin/env python
"""hypir-sweep launcher.

  python launch.py --single configs/tiny.yaml [key=value ...]     train one config (a baseline)
  python launch.py --single CONFIG --dry-run [key=value ...]       check config, data and weights only
  python launch.py sweeps/loss_weights.yaml                        a sweep (Ray Tune + Optuna + ASHA)
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="launch.py", description="Train one HYPIR config (--single) or run a hyperparameter sweep.",
        epilog="Overrides use dotted keys: lambda_l2=2 data_config.val.val_dir=/data/AIO/Val")
    parser.add_argument("spec", help="a sweep spec (sweeps/*.yaml), or with --single a training config")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (dotted keys)")
    parser.add_argument("--single", action="store_true", help="train SPEC as one run, no sweep")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate config, paths and weights availability; print the resolved config; no training")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and CI)")
    args = parser.parse_intermixed_args(argv)

    from hypir_core.errors import HypirError

    try:
        if not args.single:
            parser.error("sweep mode is not available yet; train one config with --single CONFIG")
        from hypir_core.single import dry_run, run_single

        if args.dry_run:
            return dry_run(args.spec, args.overrides)
        return run_single(args.spec, args.overrides, progress_bar=not args.no_progress)
    except HypirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
