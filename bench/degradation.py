#!/usr/bin/env python
"""Degraded training pairs per second (Real-ESRGAN's model, hypir_core.degradation) against what a step consumes.

    python bench/degradation.py [--device cpu|cuda] [--sizes 64 512] [--batch 4 6] [--repeats 5]
                                [--config configs/tiny_realesrgan.yaml] [--train-steps 6]

For each image size and batch size: the batch transform (USM, both stages, the pool) on ``--device``, the
dataset's per-image work (decode, crop, three kernels) in one loader process, and the split of the
transform's time over its operations. Settings are upstream's (configs/sd2_train_upstream.yaml's; at 64 px
the tiny config's stage2_scale 2). With ``--train-steps`` it also times the tiny HQ config's training
step (data, degradation, G and D steps): one global step consumes 2 x batch_size pairs.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def time_transform(size: int, batch: int, device, repeats: int, stage2_scale: float) -> dict:
    """Seconds per batch for the whole transform, and per operation (timed separately on the same batch)."""
    import numpy as np
    import torch

    from hypir_core.config_degradation import RealESRGANTransformParams, ValDegradation
    from hypir_core.degradation import RealESRGANBatchTransform, ops
    from hypir_core.hq_data import draw_kernels

    rng = np.random.default_rng(0)
    kernels = [draw_kernels(ValDegradation(), rng) for _ in range(batch)]
    data = {"hq": torch.rand(batch, 3, size, size), "txt": [""] * batch,
            **{k: torch.stack([d[k] for d in kernels]) for k in kernels[0]}}
    params = RealESRGANTransformParams(queue_size=4 * batch, stage2_scale=stage2_scale)
    transform = RealESRGANBatchTransform(params, seed=0, device=device)
    transform(data, step=0)  # warm-up (kernel selection, allocations)
    _sync(device)
    start = time.perf_counter()
    for step in range(1, repeats + 1):
        transform(data, step=step)
    _sync(device)
    per_batch = (time.perf_counter() - start) / repeats

    hq = data["hq"].to(device)
    quality = torch.full((batch,), 60.0, device=device)
    kernel = data["kernel1"].to(device)
    parts = {"usm": lambda: ops.usm_sharpen(hq), "blur": lambda: ops.blur(hq, kernel),
             "jpeg": lambda: ops.jpeg(hq, quality), "resize": lambda: ops.resize(hq, (size // 2,) * 2, "bicubic")}
    split = {}
    for name, run in parts.items():
        run()
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            run()
        _sync(device)
        split[name] = (time.perf_counter() - start) / repeats
    return {"per_batch": per_batch, "pairs_per_s": batch / per_batch, "split": split}


def time_dataset(size: int, count: int) -> float:
    """Seconds per item of RealESRGANDataset (PNG decode, resize, three kernels) over demo HQ images."""
    from hypir_core.config_data import RealESRGANParams
    from hypir_core.config_degradation import HQFileMeta
    from hypir_core.hq_data import RealESRGANDataset

    params = RealESRGANParams(file_meta=HQFileMeta(file_list="demo://hq/train.list", prompt_key="none"),
                              out_size=size, crop_type="none")
    dataset = RealESRGANDataset(params)
    dataset.set_epoch(0, seed=0)
    dataset[0]
    start = time.perf_counter()
    for index in range(count):
        dataset[index % len(dataset)]
    return (time.perf_counter() - start) / count


def time_training(config: str, steps: int) -> dict:
    """Seconds per global step of the tiny HQ config, and the part its data and degradation take."""
    import torch

    from hypir_core.config import load_config
    from hypir_core.trainer import _Run

    cfg = load_config(config, ["report_to=none", "output_dir=" + os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                                                              "bench-degradation")])
    run = _Run(cfg, progress_bar=False)
    data = run.batches()
    prep = []

    def timed_degrade(batch, slot, _degrade=run.degrade):
        start = time.perf_counter()
        out = _degrade(batch, slot)
        prep.append(time.perf_counter() - start)
        return out

    run.degrade = timed_degrade
    run.train_step(data, log_grads=False)
    run.progress.global_step += 1
    prep.clear()
    start = time.perf_counter()
    for _ in range(steps):
        run.train_step(data, log_grads=False)
        run.progress.global_step += 1
    per_step = (time.perf_counter() - start) / steps
    batch = cfg.data_config.train.batch_size
    return {"per_step": per_step, "degrade_per_step": sum(prep) / steps, "pairs_per_step": 2 * batch,
            "threads": torch.get_num_threads()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 512])
    parser.add_argument("--batch", type=int, nargs="+", default=[4, 6])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--config", default=str(ROOT / "configs" / "tiny_realesrgan.yaml"))
    parser.add_argument("--train-steps", type=int, default=0)
    args = parser.parse_args()
    import torch

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device {name}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| image | batch | transform s/batch | pairs/s | USM | blur | JPEG | resize | dataset s/item (1 worker) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for size in args.sizes:
        item = time_dataset(size, count=2 * args.repeats)
        for batch in args.batch:
            found = time_transform(size, batch, device, args.repeats, stage2_scale=2 if size <= 64 else 4)
            split = found["split"]
            print(f"| {size} | {batch} | {found['per_batch']:.3f} | {found['pairs_per_s']:.1f} | "
                  f"{split['usm']:.3f} | {split['blur']:.3f} | {split['jpeg']:.3f} | {split['resize']:.4f} | "
                  f"{item:.4f} |", flush=True)
    if args.train_steps:
        found = time_training(args.config, args.train_steps)
        print(f"training step ({Path(args.config).name}): {found['per_step']:.3f} s, of which degradation "
              f"{found['degrade_per_step']:.3f} s ({100 * found['degrade_per_step'] / found['per_step']:.0f}%); "
              f"it consumes {found['pairs_per_step']} pairs, {found['pairs_per_step'] / found['per_step']:.1f} "
              f"pairs/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
