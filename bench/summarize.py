#!/usr/bin/env python
"""Markdown tables of what bench/device_check.sh measured: python bench/summarize.py OUTDIR > OUTDIR/summary.md."""

from __future__ import annotations

import json
import os
import sys


def _load(out: str, name: str) -> dict | None:
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return json.load(handle)


def _num(value, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def main(out: str) -> None:
    train = _load(out, "gpu_train.json")
    if train:
        print(f"## Training step: {train['device']}, torch {train['torch']}, setup {train['setup']}\n")
        print(f"bf16 matmul rate {_num(train.get('matmul_tflops'), '{:.3g}')} TFLOP/s; "
              f"model TFLOP per step {json.dumps(train.get('model_tflop_per_step'))}; "
              f"once-done casts bit-exact: {train.get('cast_once_exact')}\n")
        for share, choice in train.get("auto", {}).items():
            print(f"- auto at {share}: checkpointing {'on' if choice['checkpointing'] else 'off'} ({choice['why']})")
        print("\n| config | s/step mean | median | prep_G | G | EMA | prep_D | D | TFLOP/s | of matmul rate | "
              "peak GiB (est.) | host syncs | first step s |")
        print("| --- | " + " | ".join(["---"] * 12) + " |")
        for name, row in train.get("configs", {}).items():
            stages = row.get("stages_s_median", {})
            print(f"| {name} | {_num(row['s_per_step_mean'])} | {_num(row['s_per_step_median'])} | "
                  + " | ".join(_num(stages.get(s)) for s in ("prep_G", "G", "EMA", "prep_D", "D"))
                  + f" | {_num(row.get('achieved_tflops'), '{:.3g}')}"
                  f" | {_num(row.get('fraction_of_matmul_rate'), '{:.1%}')}"
                  f" | {_num(row.get('peak_memory_gib'), '{:.1f}')} ({_num(row.get('estimated_peak_gib'), '{:.1f}')})"
                  f" | {row.get('host_syncs_per_step')} | {_num(row.get('first_step_s'), '{:.1f}')} |")
    share = _load(out, "gpu_share.json")
    if share:
        print(f"\n## Two trials sharing the GPU (compile {share['compile']})\n")
        print(f"shared: {share['shared']['configs']} at {share['shared']['s_per_step_mean']} s/step, "
              f"{share['shared']['steps_per_hour']:.0f} steps/hour together; alone: {share['alone']['config']} "
              f"{share['alone']['steps_per_hour']:.0f} steps/hour; gain {share['sharing_gain']:.2f}x")
    validation = _load(out, "validation.json")
    if validation:
        print(f"\n## Validation round ({validation['images']} images at {validation['size']}, batch "
              f"{validation['batch']}, compile {validation['compile']}): rounds {validation['rounds_s']} s, steady "
              f"{validation['steady_s_per_round']:.2f} s/round, Final_Score {validation['final_scores']}")


if __name__ == "__main__":
    main(sys.argv[1])
