#!/usr/bin/env python
"""Training speed and peak memory of the real HYPIR step at SD2.1-base scale, with random weights.

  python bench/gpu_train.py [--steps 30] [--warmup 5] [--rank 256] [--batch 4] [--size 512]
                            [--precision bf16] [--disc openclip_convnext_xxlarge]

Runs the trainer's own generator and discriminator steps (``hypir_core.trainer._Run``) on SD2.1-base
shapes (``random://sd2-base``), LoRA rank 256, gradient checkpointing, and a ConvNeXt discriminator
with random weights, on synthetic 512x512 pairs. Prints s/step (HYPIR's global step: one G step on a
batch, one D step on the next) after the warm-up steps and the peak GPU memory. Needs a CUDA GPU;
no tracking, no downloads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_pairs(root: str, types: list[str], per_type: int, size: int, seed: int = 0) -> None:
    """Synthetic AIO folders: smooth random images as GT, a noisier copy as LQ."""
    rng = np.random.default_rng(seed)
    for degradation_type in types:
        for sub in ("LQ", "GT"):
            os.makedirs(os.path.join(root, degradation_type, sub), exist_ok=True)
        for i in range(per_type):
            low = rng.random((size // 16, size // 16, 3))
            gt = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC))
            lq = np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).astype(np.uint8)
            Image.fromarray(gt).save(os.path.join(root, degradation_type, "GT", f"{i:04d}.png"))
            Image.fromarray(lq).save(os.path.join(root, degradation_type, "LQ", f"{i:04d}.png"))


def bench_config(args, root: str):
    from hypir_core.config import config_from_dict

    return config_from_dict({
        "base_model_path": "random://sd2-base",
        "output_dir": os.path.join(root, "run"),
        "max_train_steps": args.steps + args.warmup,
        "lora_rank": args.rank, "disc_backbone": args.disc, "lpips_weights": "random",
        "mixed_precision": args.precision, "gradient_checkpointing": True, "report_to": "none",
        "lambda_l1": 1.0, "lambda_ssim": 1.0,
        "data_config": {
            "train": {"batch_size": args.batch, "dataloader_num_workers": 4,
                      "dataset": {"target": "AIOFolderDataset",
                                  "params": {"root": os.path.join(root, "train"), "out_size": args.size}}},
            "val": {"val_dir": os.path.join(root, "val"), "resize": args.size, "batch_size": 8},
        },
    }, name="gpu_bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--disc", default="openclip_convnext_xxlarge")
    parser.add_argument("--json", help="also write the numbers to this file")
    parser.add_argument("--allow-cpu", action="store_true", help="smoke-test on CPU (timings meaningless)")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        sys.exit("bench/gpu_train.py needs a CUDA GPU.")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    from hypir_core.trainer import _Run

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    with tempfile.TemporaryDirectory() as root:
        types = ["Blur", "Haze", "Lowlight", "Rain", "Snow"]
        write_pairs(os.path.join(root, "train"), types, per_type=8, size=args.size)
        write_pairs(os.path.join(root, "val"), types, per_type=1, size=args.size, seed=1)
        # Random backbone weights: the bench measures cost, not quality, and the GPU box has no network.
        run = _Run(bench_config(args, root), progress_bar=False, disc_pretrained=False)
        data = run.batches()
        times = []
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for step in range(args.warmup + args.steps):
            sync()
            start = time.perf_counter()
            run.train_step(data, log_grads=False)
            run.progress.global_step += 1
            sync()
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
        result = {
            "device": torch.cuda.get_device_name(0) if cuda else "cpu", "lora_rank": args.rank, "batch": args.batch,
            "size": args.size, "precision": args.precision, "disc": args.disc, "steps_timed": len(times),
            "s_per_step_mean": float(np.mean(times)), "s_per_step_median": float(np.median(times)),
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
            "lora_params_m": sum(p.numel() for p in run.lora_params) / 1e6,
        }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
