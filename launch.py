#!/usr/bin/env python
"""hypir-sweep launcher.

  python launch.py --single configs/tiny.yaml [key=value ...]     train one config (a baseline)
  python launch.py --single CONFIG --dry-run [key=value ...]       check config, data and weights only
  python launch.py sweeps/loss_weights.yaml [--resume] [--address HOST:PORT]   a sweep (Ray Tune + Optuna + ASHA)
  python launch.py sweeps/loss_weights.yaml --dry-run              check the spec, show 3 sampled configs
"""

import argparse
import os
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
    parser.add_argument("--verbose", action="store_true",
                        help="print what libraries print (a sweep: Ray's boxes per trial and every trial's log too)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep where it stopped")
    parser.add_argument("--address", default=None,
                        help="join a running Ray cluster (host:port, or 'auto'); default $RAY_ADDRESS or a local one")
    args = parser.parse_intermixed_args(argv)
    if args.verbose:
        os.environ["HYPIR_SWEEP_VERBOSE"] = "1"  # before hypir_core is imported: it keeps unused libraries out

    from hypir_core.errors import HypirError

    try:
        if not args.single:
            if args.overrides:
                parser.error("a sweep takes no key=value overrides; put them under 'overrides:' in the spec")
            from hypir_sweep.dry_run import dry_run as sweep_dry_run
            from hypir_sweep.runner import run_sweep

            if args.dry_run:
                return sweep_dry_run(args.spec)
            return run_sweep(args.spec, resume=args.resume, address=args.address, progress=not args.no_progress,
                             verbose=args.verbose)
        if args.resume or args.address:
            parser.error("--resume and --address are for sweeps; resume a single run with "
                         "resume_from_checkpoint=latest")
        from hypir_core.single import dry_run, run_single

        if args.dry_run:
            return dry_run(args.spec, args.overrides)
        return run_single(args.spec, args.overrides, progress_bar=not args.no_progress)
    except HypirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before a run had started (a sweep handles its own once it has)
        print("\nInterrupted while starting.", file=sys.stderr)
        sys.exit(130)
