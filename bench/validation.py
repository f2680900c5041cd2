#!/usr/bin/env python
"""Validation speed: our Validator against a loop written the users' way, on the same model and images.

  python bench/validation.py [--rounds 3]                       tiny model, demo val set, CPU
  python bench/validation.py --gpu [--images 500] [--size 512]  SD2.1-base shapes, random weights, bf16
  add --compile for the trainer's compiled path (hypir_core.speed), --ours-only to skip the users' loop,
  --json PATH to write the numbers

The users' loop (their train.py's validation): batch 1, every image read from disk each round, the
prompt re-encoded per image, a VAE posterior sample, metrics built once. Ours: the validation set
decoded once and cached, the prompt embedded once, batches, the posterior mode. Both score with the
same pyiqa metrics. Prints both times per round and, last, the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hypir_core.data import read_image, scan_val_set  # noqa: E402
from hypir_core.metrics import FINAL_SCORE, QualityMetrics, final_score  # noqa: E402
from hypir_core.models import OneStepGenerator, load_sd2  # noqa: E402
from hypir_core.validation import Validator  # noqa: E402


def users_loop(generator, metrics, pairs, prompt, size, device, autocast):
    """One validation round as the users' trainer runs it (see the module docstring)."""
    from PIL import Image

    scores = {"PSNR": [], "SSIM": [], "LPIPS": []}
    for pair in pairs:
        lq, gt = read_image(pair.lq_path), read_image(pair.gt_path)
        lq = np.asarray(Image.fromarray(lq).resize((size, size), Image.BICUBIC))
        gt = np.asarray(Image.fromarray(gt).resize((size, size), Image.BICUBIC))
        lq_t = torch.from_numpy(lq).permute(2, 0, 1)[None].float().to(device) / 127.5 - 1
        gt_t = torch.from_numpy(gt).permute(2, 0, 1)[None].float().to(device) / 255
        with torch.no_grad(), autocast():
            text = generator.encode_prompt([prompt])
            z = generator.encode_lq(lq_t, sample=True)
            out = (generator(z, text).float().clamp(-1, 1) + 1) / 2
        batch = metrics(out, gt_t)
        for name in scores:
            scores[name].append(float(batch[name][0]))
    return final_score(*(float(np.mean(scores[n])) for n in ("PSNR", "SSIM", "LPIPS")))


def print_stage_times(validator, metrics, device):
    """Where one of our batches spends its time: restoration, then each metric."""
    indices = next(iter(validator._batches()))
    lq = np.stack([validator.images[i][0] for i in indices])
    gt = torch.from_numpy(np.stack([validator.images[i][1] for i in indices])).to(device).permute(0, 3, 1, 2)
    gt = gt.float() / 255
    t_restore, restored = _timed(lambda: validator.restore(lq), device)
    parts = {name: _timed(lambda m=m: m(restored, gt), device)[0]
             for name, m in (("PSNR", metrics.psnr), ("SSIM", metrics.ssim), ("LPIPS", metrics.lpips))}
    print(f"one batch of {len(indices)}: restore {t_restore:.3f} s, "
          + ", ".join(f"{name} {t:.3f} s" for name, t in parts.items()))


def _timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="SD2.1-base shapes, random weights, bf16, CUDA")
    parser.add_argument("--images", type=int, default=500, help="with --gpu: synthetic validation images")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--allow-cpu", action="store_true", help="with --gpu: smoke-test on CPU (timings meaningless)")
    parser.add_argument("--compile", action="store_true", help="torch.compile UNet blocks, VAE and LPIPS, as a run")
    parser.add_argument("--ours-only", action="store_true", help="skip the users' loop")
    parser.add_argument("--json", help="write the numbers to this file")
    args = parser.parse_args()

    os.environ.setdefault("HYPIR_SWEEP_CACHE", os.path.join(tempfile.gettempdir(), "hypir-sweep-bench"))
    tmp = tempfile.TemporaryDirectory()
    if args.gpu:
        from bench.gpu_train import write_pairs

        if not torch.cuda.is_available() and not args.allow_cpu:
            sys.exit("bench/validation.py --gpu needs a CUDA GPU.")
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        dtype, model = torch.bfloat16, "random://sd2-base"
        val_dir = os.path.join(tmp.name, "val")
        write_pairs(val_dir, ["Blur", "Haze", "Lowlight", "Rain", "Snow"], args.images // 5, args.size)
        autocast = lambda: torch.autocast(device.type, dtype=dtype)  # noqa: E731
    else:
        from hypir_core.demo import resolve_path

        device, dtype, model, args.size, args.batch = torch.device("cpu"), torch.float32, "demo://tiny-sd2", 64, 20
        val_dir = resolve_path("demo://aio/val")
        import contextlib

        autocast = contextlib.nullcontext
    torch.manual_seed(0)
    parts = load_sd2(model, dtype, device)
    generator = OneStepGenerator(parts, 200, 200)
    metrics = QualityMetrics(device, "random")
    if args.compile:
        from hypir_core import speed

        speed.cast_once(generator.unet, None, dtype, device)  # the UNet runs under autocast here, as in a run
        speed.compile_regions(generator, None, [metrics.lpips])
    val_cfg = SimpleNamespace(val_dir=val_dir, degradation_types=["Blur", "Haze", "Lowlight", "Rain", "Snow"],
                              num_samples_per_type=None, batch_size=args.batch, prompt="", resize=args.size,
                              quantize=True)
    pairs = scan_val_set(val_cfg)
    print(f"{len(pairs)} validation images at {args.size}x{args.size} on {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'CPU'}")

    setup, validator = _timed(lambda: Validator(val_cfg, generator, metrics, device, autocast), device)
    ours, theirs = [], []
    scores = []
    for round_index in range(args.rounds):
        t_ours, score_ours = _timed(lambda: validator.run().metrics[FINAL_SCORE], device)
        ours.append(t_ours)
        scores.append(score_ours)
        line = f"round {round_index + 1}: ours {t_ours:.2f} s (Final_Score {score_ours:.4f})"
        if not args.ours_only:
            t_theirs, score_theirs = _timed(
                lambda: users_loop(generator, metrics, pairs, "", args.size, device, autocast), device)
            theirs.append(t_theirs)
            line += f", users' loop {t_theirs:.2f} s (Final_Score {score_theirs:.4f})"
        print(line, flush=True)
    print_stage_times(validator, metrics, device)
    # With --compile the first round compiles: the rounds after it are the steady state.
    steady = ours[1:] if args.compile and len(ours) > 1 else ours
    print(f"ours: cache setup {setup:.2f} s once, then {np.median(steady):.2f} s/round "
          f"({len(pairs) / np.median(steady):.1f} images/s)"
          + (f"; users' loop {np.median(theirs):.2f} s/round ({len(pairs) / np.median(theirs):.1f} images/s)"
             if theirs else ""))
    if theirs:
        print(f"ratio (users' loop / ours, median round): {np.median(theirs) / np.median(steady):.2f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                       "images": len(pairs), "size": args.size, "batch": args.batch, "compile": args.compile,
                       "setup_s": setup, "rounds_s": ours, "steady_s_per_round": float(np.median(steady)),
                       "final_scores": scores, "users_loop_rounds_s": theirs}, handle, indent=2)


if __name__ == "__main__":
    main()
