#!/usr/bin/env python
"""Two trials sharing one GPU against one at a time: aggregate training steps per hour.

  python bench/gpu_share.py --out DIR [--steps 10] [--warmup 2] [--compile] [--alone DIR/gpu_train.json]
  python bench/gpu_share.py --out DIR --cpu-smoke

Starts two ``bench/gpu_train.py --configs auto`` processes with ``HYPIR_SWEEP_GPU_SHARE=0.5`` (what a
sweep trial with ``resources.gpu: 0.5`` gets, so each picks gradient checkpointing for half the card),
lets both load and warm up, then starts their timed steps together. Shared: the sum of the two
processes' steps per hour. Alone: one process with the whole card (``--alone``: read it from a
gpu_train.json of the same card, the config auto picks at share 1; else measured here first).
Writes ``DIR/gpu_share.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def child(args, out: str, share: float, ready: str | None = None, go: str | None = None) -> subprocess.Popen:
    command = [sys.executable, os.path.join(HERE, "gpu_train.py"), "--out", out, "--configs", "auto",
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--share", str(share), "--no-flops"]
    if args.cpu_smoke:
        command.append("--cpu-smoke")
    if ready:
        command += ["--ready", ready, "--go", go]
    env = {**os.environ, "HYPIR_SWEEP_GPU_SHARE": str(share)}
    command += ["--compile", "true" if args.compile else "false"]
    os.makedirs(out, exist_ok=True)
    log = open(os.path.join(out, "log.txt"), "w")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def read_row(path: str) -> tuple[str, dict]:
    with open(path) as handle:
        configs = json.load(handle)["configs"]
    return next(iter(configs.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="both trials compiled (default: eager)")
    parser.add_argument("--alone", help="gpu_train.json of the same card with the config auto picks at share 1")
    parser.add_argument("--cpu-smoke", action="store_true")
    args = parser.parse_args()
    root = os.path.join(args.out, "share")
    os.makedirs(root, exist_ok=True)
    result = {"compile": args.compile, "steps": args.steps}

    # Shared: two processes at share 0.5, timed steps started together.
    ready = [os.path.join(root, f"ready{i}") for i in range(2)]
    go = os.path.join(root, "go")
    for path in (*ready, go):
        if os.path.exists(path):
            os.remove(path)
    started = time.time()
    procs = [child(args, os.path.join(root, f"trial{i}"), 0.5, ready[i], go) for i in range(2)]
    while not all(os.path.exists(p) for p in ready):
        if any(p.poll() is not None for p in procs):
            sys.exit(f"a sharing trial ended before its timed steps; see {root}/trial*/log.txt")
        time.sleep(0.1)
    open(go, "w").close()
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"a sharing trial failed ({codes}); see {root}/trial*/log.txt")
    rows = [read_row(os.path.join(root, f"trial{i}", "gpu_train.json")) for i in range(2)]
    result["shared"] = {
        "configs": [name for name, _ in rows], "s_per_step_mean": [row["s_per_step_mean"] for _, row in rows],
        "peak_memory_gib": [row.get("peak_memory_gib") for _, row in rows],
        "steps_per_hour": sum(3600 / row["s_per_step_mean"] for _, row in rows),
        "wall_s_with_setup": time.time() - started}

    # Alone: the whole card, from the main bench's row of the config auto picks there, else measured now.
    row = None
    if args.alone:
        with open(args.alone) as handle:
            alone_json = json.load(handle)
        share1 = alone_json["auto"]["share 1"]
        name = f"{'compile' if args.compile else 'eager'}-{'ckpt' if share1['checkpointing'] else 'nockpt'}"
        row = alone_json["configs"].get(name)
    if row is not None:
        result["alone"] = {"config": name, "from": args.alone, "s_per_step_mean": row["s_per_step_mean"]}
    else:
        proc = child(args, os.path.join(root, "alone"), 1.0)
        if proc.wait():
            sys.exit(f"the trial alone failed; see {root}/alone/log.txt")
        name, row = read_row(os.path.join(root, "alone", "gpu_train.json"))
        result["alone"] = {"config": name, "s_per_step_mean": row["s_per_step_mean"]}
    result["alone"]["steps_per_hour"] = 3600 / result["alone"]["s_per_step_mean"]
    result["sharing_gain"] = result["shared"]["steps_per_hour"] / result["alone"]["steps_per_hour"]
    with open(os.path.join(args.out, "gpu_share.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
