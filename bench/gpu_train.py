#!/usr/bin/env python
"""Training speed against the GPU's own limit: the real HYPIR step at SD2.1-base scale, with random weights.

  python bench/gpu_train.py --out DIR [--configs eager-ckpt,eager-nockpt,compile-nockpt,compile-ckpt]
                            [--steps 10] [--warmup 3] [--profile CONFIG] [--share 1.0]
  python bench/gpu_train.py --out DIR --cpu-smoke      the same code path on the tiny model, on the CPU

Runs the trainer's own step (``hypir_core.trainer._Run.train_step``: G on a batch, EMA, D on the
next, re-running G) on SD2.1-base shapes (``random://sd2-base``), LoRA 256 on HYPIR's 13 module
types, batch 4, 512x512, bf16, all five loss terms, an OpenCLIP ConvNeXt-XXLarge discriminator with
random weights, on synthetic pairs. In one process it measures, for each config (gradient
checkpointing on/off, eager/compiled; eager ones first, since compiling is in place):
s/step (mean of wall time, median of the GPU's per-step time), the prep/G/EMA/D split, peak memory
(and the memory model's estimate), host syncs in a step (CUDA sync debug mode), TFLOP/s achieved
(the step's FLOPs counted once by FlopCounterMode without checkpointing) and its fraction of the card's
bf16 matmul rate measured in the same run. What ``gradient_checkpointing: auto`` picks for a whole
card and for half of it is reported too. ``DIR/gpu_train.json`` is rewritten after every config, so
a run cut short keeps what it measured. No tracking, no downloads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CONFIGS = ("eager-ckpt", "eager-nockpt", "compile-nockpt", "compile-ckpt")
STAGES = ("prep_G", "G", "EMA", "prep_D", "D")


def write_pairs(root: str, types: list[str], per_type: int, size: int, seed: int = 0) -> None:
    """Synthetic AIO folders: smooth random images as GT, a noisier copy as LQ."""
    rng = np.random.default_rng(seed)
    for degradation_type in types:
        for sub in ("LQ", "GT"):
            os.makedirs(os.path.join(root, degradation_type, sub), exist_ok=True)
        for i in range(per_type):
            low = rng.random((max(size // 16, 2), max(size // 16, 2), 3))
            gt = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC))
            lq = np.clip(gt + rng.normal(0, 20, gt.shape), 0, 255).astype(np.uint8)
            Image.fromarray(gt).save(os.path.join(root, degradation_type, "GT", f"{i:04d}.png"))
            Image.fromarray(lq).save(os.path.join(root, degradation_type, "LQ", f"{i:04d}.png"))


def bench_config(args, root: str, **keys):
    from hypir_core.config import config_from_dict

    return config_from_dict({
        "base_model_path": "demo://tiny-sd2" if args.cpu_smoke else "random://sd2-base",
        "output_dir": os.path.join(root, "run"), "max_train_steps": 100_000,
        "lora_rank": args.rank, "disc_backbone": args.disc, "lpips_weights": "random",
        "mixed_precision": args.precision, "report_to": "none",
        "lambda_l1": 1.0, "lambda_ssim": 1.0, **keys,
        "data_config": {
            "train": {"batch_size": args.batch, "dataloader_num_workers": 0 if args.cpu_smoke else 4,
                      "dataset": {"target": "AIOFolderDataset",
                                  "params": {"root": os.path.join(root, "train"), "out_size": args.size}}},
            "val": {"val_dir": os.path.join(root, "val"), "resize": args.size, "batch_size": 8},
        },
    }, name="gpu_bench")


def matmul_tflops(device: torch.device, n: int, iters: int) -> float:
    """Dense bf16 matmul rate of this device (TFLOP/s): the card's practical peak, measured."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    return 2 * n**3 * iters / (time.perf_counter() - start) / 1e12


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class StageClock:
    """Stage boundaries of each step: CUDA events (no host sync) on a GPU, wall time on the CPU."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.steps: list[list[tuple[str, object]]] = []

    def _now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start_step(self) -> None:
        self.steps.append([("start", self._now())])

    def mark(self, stage: str) -> None:
        self.steps[-1].append((stage, self._now()))

    def _seconds(self, a, b) -> float:
        return a.elapsed_time(b) / 1000 if self.cuda else b - a

    def summary(self) -> dict:
        """Median seconds per step (start to start; the last to its end) and per stage."""
        per_step = [self._seconds(step[0][1], nxt[0][1]) for step, nxt in zip(self.steps, self.steps[1:])]
        per_step.append(self._seconds(self.steps[-1][0][1], self.steps[-1][-1][1]))
        stages = {name: float(np.median([self._seconds(step[i][1], step[i + 1][1]) for step in self.steps]))
                  for i, name in enumerate(STAGES)}
        return {"s_per_step_median": float(np.median(per_step)), "stages_s_median": stages}


def count_flops(run, data) -> dict:
    """TFLOP of one step by stage (FlopCounterMode), gradient checkpointing off: the model's work, no recompute."""
    from torch.utils.flop_counter import FlopCounterMode

    counter, marks = FlopCounterMode(display=False), {}
    with counter:
        run.train_step(data, log_grads=False, mark=lambda stage: marks.__setitem__(stage, counter.get_total_flops()))
    previous, split = 0, {}
    for stage in STAGES:
        split[stage] = (marks[stage] - previous) / 1e12
        previous = marks[stage]
    return {"total": sum(split.values()), "by_stage": split}


def count_syncs(run, data, device) -> int | None:
    """Host synchronisations in one step, as CUDA's sync debug mode reports them (None on the CPU)."""
    if device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run.train_step(data, log_grads=False)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def use_fused_adamw(run) -> None:
    """Switch the run's AdamW to the fused kernel, as compile on CUDA builds it (its state starts afresh)."""
    for optimizer in (run.opt_G, run.opt_D):
        optimizer.optimizer.state.clear()
        for group in optimizer.param_groups:
            group["fused"], group["foreach"] = True, False


def set_checkpointing(run, on: bool) -> None:
    unet = run.generator.unet
    unet.enable_gradient_checkpointing() if on else unet.disable_gradient_checkpointing()
    run.speed = replace(run.speed, checkpointing=on)


def cast_once_is_exact(run, data) -> bool | None:
    """Whether speed.cast_once leaves the generator's and discriminator's outputs bit-identical (CUDA, bf16)."""
    if run.device.type != "cuda" or run.dtype == torch.float32:
        return None
    from peft.tuners.tuners_utils import BaseTunerLayer

    batch = run.prepare_micro_batch(next(data))
    modules = [m for m in (*run.generator.unet.modules(), *run.D.backbone.modules())
               if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm))]
    peft_layers = [m for m in run.generator.unet.modules() if isinstance(m, BaseTunerLayer)]

    def outputs():
        with torch.no_grad(), run.accelerator.autocast():
            image = run.generator(batch["z_lq"], batch["text"])
            return [image, *run.D.logits(image)]

    fast = outputs()
    for m in modules:
        m.to(run.dtype)
    for layer in peft_layers:
        layer.cast_input_dtype_enabled = True
    plain = outputs()
    from hypir_core import speed

    speed.cast_once(run.generator.unet, run.D.backbone, run.dtype, run.device)
    return all(torch.equal(a, b) for a, b in zip(fast, plain))


def profile(run, data, device, path: str) -> dict:
    """Top kernels and op counts over two steps (torch.profiler), written to ``path``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities) as prof:
        for _ in range(2):
            run.train_step(data, log_grads=False)
        _sync(device)
    events = prof.key_averages()
    device_time = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    top = sorted(events, key=lambda e: getattr(e, device_time, 0), reverse=True)[:25]
    counts = {e.key: e.count for e in events if e.key in ("aten::to", "aten::_to_copy", "aten::copy_",
                                                         "aten::contiguous", "cudaStreamSynchronize",
                                                         "cudaLaunchKernel", "aten::item")}
    result = {"top_by_device_time_ms_per_step": [(e.key, getattr(e, device_time, 0) / 2000) for e in top],
              "op_counts_per_2_steps": counts,
              "sdpa_kernels": sorted({e.key for e in events if "attention" in e.key.lower() or "fmha" in e.key.lower()
                                      or "flash" in e.key.lower()})}
    with open(path, "w") as handle:
        json.dump(result, handle, indent=1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for gpu_train.json (and profiles)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated, of {', '.join(CONFIGS)}, or auto (what the trainer picks)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rank", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--disc", default="openclip_convnext_xxlarge")
    parser.add_argument("--share", type=float, default=None, help="GPU share for the auto choice (default env or 1)")
    parser.add_argument("--compile", default="auto", choices=("auto", "true", "false"),
                        help="the compile key that --configs auto resolves")
    parser.add_argument("--profile", default="", help="comma-separated configs to profile after timing")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count and matmul rate")
    parser.add_argument("--ready", help="touch this file after warm-up, then wait for --go (bench/gpu_share.py)")
    parser.add_argument("--go", help="wait for this file before the timed steps")
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU: checks the code, not speed")
    args = parser.parse_args()
    if args.cpu_smoke:
        args.rank, args.batch, args.size, args.disc, args.precision = 4, 2, 64, "tiny", "no"
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
    elif not torch.cuda.is_available():
        sys.exit("bench/gpu_train.py needs a CUDA GPU (or --cpu-smoke).")
    os.makedirs(args.out, exist_ok=True)
    out_json = os.path.join(args.out, "gpu_train.json")
    run_bench(args, out_json)


def run_bench(args, out_json: str) -> None:
    from hypir_core import memory, speed
    from hypir_core.trainer import _Run

    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu_smoke else "cpu")
    result = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "setup": {k: getattr(args, k) for k in ("rank", "batch", "size", "precision",
                                                                                  "disc", "steps", "warmup")},
              "configs": {}}

    def save():
        with open(out_json, "w") as handle:
            json.dump(result, handle, indent=2)

    root = tempfile.mkdtemp(prefix="hypir-gpu-bench-")
    types = ["Blur", "Haze", "Lowlight", "Rain", "Snow"]
    write_pairs(os.path.join(root, "train"), types, per_type=8, size=args.size)
    write_pairs(os.path.join(root, "val"), types, per_type=1, size=args.size, seed=1)
    started = time.perf_counter()
    # Random backbone weights: the bench measures cost, not quality, and the GPU box has no network.
    run = _Run(bench_config(args, root, gradient_checkpointing=False, compile=False), progress_bar=False,
               disc_pretrained=False)
    result["setup_s"] = time.perf_counter() - started
    result["lora_params_m"] = sum(p.numel() for p in run.lora_params) / 1e6
    data = run.batches()
    auto_cfg = bench_config(args, root, compile={"auto": "auto", "true": True, "false": False}[args.compile])
    result["auto"] = {}
    for share in ([args.share] if args.share else [1.0, 0.5]):
        chosen = speed.plan(auto_cfg, device, share=share)
        result["auto"][f"share {share:g}"] = {"checkpointing": chosen.checkpointing, "why": chosen.checkpointing_reason,
                                              "compile": chosen.compile}
    result["memory_model_gib"] = {"checkpointing on": memory.estimate_peak_gib(auto_cfg, True),
                                  "checkpointing off": memory.estimate_peak_gib(auto_cfg, False)}
    result["cast_once_exact"] = cast_once_is_exact(run, data)
    if not args.no_flops:
        result["matmul_tflops"] = matmul_tflops(device, 8192 if device.type == "cuda" else 512,
                                                100 if device.type == "cuda" else 3)
        result["model_tflop_per_step"] = count_flops(run, data)
    save()

    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    if names == ["auto"]:
        chosen = speed.plan(auto_cfg, device, share=args.share)
        names = [f"{'compile' if chosen.compile else 'eager'}-{'ckpt' if chosen.checkpointing else 'nockpt'}"]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        sys.exit(f"unknown configs {sorted(unknown)}; use {', '.join(CONFIGS)} or auto")
    names.sort(key=lambda n: n.startswith("compile"))  # compiling is in place: eager configs first
    profiled = {n.strip() for n in args.profile.split(",") if n.strip()}
    for name in names:
        compiled, checkpointing = name.startswith("compile"), name.endswith("-ckpt")
        set_checkpointing(run, checkpointing)
        if compiled and not run.speed.compile:
            run.speed = replace(run.speed, compile=True, fused_adamw=device.type == "cuda")
            run.compile_regions()
            if device.type == "cuda":
                use_fused_adamw(run)
        row = time_config(run, data, device, args)
        row["estimated_peak_gib"] = memory.estimate_peak_gib(auto_cfg, checkpointing)
        flops = result.get("model_tflop_per_step", {}).get("total")
        if flops:
            row["achieved_tflops"] = flops / row["s_per_step_median"]
            row["fraction_of_matmul_rate"] = row["achieved_tflops"] / result["matmul_tflops"]
        result["configs"][name] = row
        save()
        print(f"{name}: {row['s_per_step_mean']:.3f} s/step mean, {row['s_per_step_median']:.3f} median, "
              f"peak {row.get('peak_memory_gib') or 0:.1f} GiB, first step {row['first_step_s']:.1f} s", flush=True)
        if name in profiled:
            row["profile"] = profile(run, data, device, os.path.join(os.path.dirname(out_json), f"profile_{name}.json"))
            save()
    print(json.dumps({k: v for k, v in result.items() if k != "configs"}, indent=1))


def time_config(run, data, device, args) -> dict:
    """Warm-up steps (compiling, if on), then the timed steps of one config."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    start = time.perf_counter()
    run.train_step(data, log_grads=False)
    _sync(device)
    first = time.perf_counter() - start
    for _ in range(max(args.warmup - 1, 0)):
        run.train_step(data, log_grads=False)
    syncs = count_syncs(run, data, device)
    if args.ready:
        open(args.ready, "w").close()
        while args.go and not os.path.exists(args.go):
            time.sleep(0.05)
    clock = StageClock(device)
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        clock.start_step()
        run.train_step(data, log_grads=False, mark=clock.mark)
    _sync(device)
    wall = time.perf_counter() - start
    row = {"s_per_step_mean": wall / args.steps, **clock.summary(), "first_step_s": first,
           "host_syncs_per_step": syncs, "timed_steps": args.steps, "finished_at": time.time()}
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
    return row


if __name__ == "__main__":
    main()
