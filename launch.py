#!/usr/bin/env python
"""hypir-sweep launcher.

  python launch.py --single configs/tiny.yaml [key=value ...]     train one config (a baseline)
  python launch.py --single CONFIG --dry-run [key=value ...]       check config, data and weights only
  python launch.py sweeps/loss_weights.yaml [--resume] [--address HOST:PORT]   a sweep (Ray Tune + Optuna + ASHA)
  python launch.py sweeps/loss_weights.yaml --dry-run              check the spec, show 3 sampled configs
  python launch.py sweeps/loss_weights.yaml --confirm              re-run the best configs with new seeds
  python launch.py --restore SOURCE INPUT --output OUT [options]   restore images with trained weights
  python launch.py --restore INPUT --config X.yaml --weights W.pth --output OUT   any config + weights file
"""

import argparse
import os
import sys


def _patch_size(text: str) -> int | None:
    if text.lower() == "none":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a number of pixels nor 'none'") from None


def restore_main(argv) -> int:
    """launch.py --restore: HYPIR's inference with trained weights on a folder (or one image)."""
    parser = argparse.ArgumentParser(
        prog="launch.py --restore", description="Restore images with trained HYPIR weights, as HYPIR's inference does.",
        epilog="SOURCE: analyze.py's best_config.yaml, a run folder (results/<name>) or a sweep trial folder; "
               "or give --config and --weights and only INPUT.")
    parser.add_argument("--restore", nargs="+", required=True, metavar="SOURCE INPUT",
                        help="where the model comes from, then a folder of images or one image")
    parser.add_argument("--output", required=True, metavar="OUT_DIR", help="where the restored images go")
    parser.add_argument("--config", help="a training config, or HYPIR's sd2_gradio.yaml (instead of SOURCE)")
    parser.add_argument("--weights", help="a HYPIR .pth (LoRA weights; e.g. the released HYPIR_sd2.pth)")
    parser.add_argument("--upscale", type=float, default=1.0, help="resize factor before restoring (default 1)")
    parser.add_argument("--scale-by", choices=("factor", "longest_side"), default="factor")
    parser.add_argument("--target-longest-side", type=int, help="with --scale-by longest_side: its length in pixels")
    parser.add_argument("--patch-size", type=_patch_size, default=512,
                        help="tile size in pixels (HYPIR: 512; a shorter short side is resized up to it), or 'none' "
                             "for the whole image at its own size in one pass")
    parser.add_argument("--stride", type=int, default=256, help="tile stride in pixels (HYPIR: 256)")
    parser.add_argument("--prompt", help="the prompt for every image (default: the config's validation prompt)")
    parser.add_argument("--txt-dir", help="one prompt .txt per image, at the image's relative path")
    parser.add_argument("--seed", type=int, default=231, help="seeds each image's posterior sample (HYPIR: 231)")
    parser.add_argument("--posterior", choices=("sample", "mode"), default="sample",
                        help="VAE posterior: sample as HYPIR infers, or its mode as validation scores")
    parser.add_argument("--color-fix", choices=("wavelet", "none"), default="wavelet",
                        help="HYPIR's wavelet colour fix (default, as HYPIR deploys) or none (as validation scores)")
    parser.add_argument("--pad", choices=("zero", "reflect"), default="zero",
                        help="padding to the VAE's multiple: zero as HYPIR, reflect as validation")
    parser.add_argument("--format", choices=("png", "jpg"), default="png", help="jpg: quality 96, as the fork saves")
    parser.add_argument("--gt", metavar="GT_DIR", help="score the outputs against GT images (validation's matching)")
    parser.add_argument("--device", help="cuda, cpu, ... (default: cuda when there is one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    given = 1 if args.config else 2
    if len(args.restore) != given:
        parser.error("--restore takes SOURCE INPUT, or only INPUT with --config and --weights")

    from hypir_core.errors import HypirError
    from hypir_core.restoration import RestoreSettings
    from hypir_core.restore import model_from_source, print_run, restore_images

    try:
        spec = model_from_source(None if args.config else args.restore[0], args.config, args.weights)
        settings = RestoreSettings(upscale=args.upscale, scale_by=args.scale_by,
                                   target_longest_side=args.target_longest_side, patch_size=args.patch_size,
                                   stride=args.stride,
                                   posterior=args.posterior, color_fix=args.color_fix,
                                   pad_mode="constant" if args.pad == "zero" else "reflect")
        run = restore_images(spec, args.restore[-1], args.output, settings, prompt=args.prompt, txt_dir=args.txt_dir,
                             seed=args.seed, image_format=args.format, gt_dir=args.gt, device=args.device,
                             progress=not args.no_progress)
    except HypirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_run(run, args.output)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--restore" in argv:
        return restore_main(argv)
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
    parser.add_argument("--confirm", action="store_true",
                        help="continue a sweep (ended or not) with its best full-budget configs re-run with new seeds: "
                             "the spec's confirm settings, or 3 finalists x confirm.seeds")
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
                             verbose=args.verbose, confirm=args.confirm)
        if args.resume or args.address or args.confirm:
            parser.error("--resume, --confirm and --address are for sweeps; resume a single run with "
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
