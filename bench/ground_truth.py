#!/usr/bin/env python
"""Ground truth for the search benchmark: every config of a grid, several seeds each, run to the full
budget, every round's metrics in one CSV, what it was built with beside it.

    python bench/ground_truth.py [--grid quickstart|diverging] [--seeds 3] [--workers 2] [--out CSV]

Each run trains exactly as a quickstart trial does (``SweepSpec.trial_config``: the quickstart's base
config, overrides and budget) with the base config's seed and the next ones, in worker processes of one
torch thread each. A run that diverges is kept with its ending (``diverged at step N``) and the rounds it
reached: the ``diverging`` grid extends lr_G to where the tiny model's training blows up, for the
benchmark of a search that learns from failures. The truth of a config is its mean over seeds; the
spread over seeds is what a search's regret is to be judged against.

The CSV is appended to as each run finishes, so an interrupted build continues where it stopped. Beside
it, ``<name>.json`` records the trainer's commit, the spec, its overrides, the seeds and the machine:
bench/search.py warns when the trainer changed since, and trains a config to check it still matches.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypir_core.demo import DEGRADATION_TYPES  # noqa: E402
from hypir_core.metrics import FINAL_SCORE  # noqa: E402

GRIDS = {
    # Three values per parameter of sweeps/quickstart.yaml: its bounds and a middle point (geometric for
    # the log-scaled ones), 81 configs in all.
    "quickstart": {
        "lambda_l2": [0.5, 2.0, 4.0],
        "lambda_l1": [0.5, 2.0, 4.0],
        "lambda_gan": [0.01, 0.1, 1.0],
        "lr_G": [1.0e-4, 5.5e-4, 3.0e-3],
    },
    # lr_G beyond the quickstart's range, up to where training diverges (a NaN loss in the first steps
    # from about 0.3 on the tiny model), 42 configs.
    "diverging": {
        "lambda_l2": [0.5, 4.0],
        "lambda_gan": [0.01, 0.1, 1.0],
        "lr_G": [5.5e-4, 3.0e-3, 1.0e-2, 3.0e-2, 1.0e-1, 3.0e-1, 1.0],
    },
}
GRID = GRIDS["quickstart"]
TABLES = {name: ROOT / "bench" / "data" / f"{name}_grid.csv" for name in GRIDS}
# Each type's PSNR too: the all-in-one trade-offs a Pareto sweep searches (bench/pareto.py).
TYPE_METRICS = tuple(f"val/{kind}/PSNR" for kind in DEGRADATION_TYPES)
METRICS = (FINAL_SCORE, "val/PSNR", "val/SSIM", "val/LPIPS", *TYPE_METRICS)
TRAINER_PATHS = ("hypir_core", "configs/tiny.yaml", "sweeps/quickstart.yaml")


def grid_configs(grid: dict = GRID) -> list[dict]:
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def config_key(params: dict, grid: dict = GRID) -> str:
    return ",".join(f"{k}={params[k]!r}" for k in grid)


def columns(grid: dict) -> list[str]:
    return ["config", "seed", *grid, "round", "step", *METRICS, "seconds", "ending"]


def trainer_commit() -> str:
    """The newest commit that changed the trainer, its default config or the quickstart spec ('' outside git)."""
    found = subprocess.run(["git", "log", "-1", "--format=%H", "--", *TRAINER_PATHS], cwd=ROOT,
                           capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *TRAINER_PATHS], cwd=ROOT,
                           capture_output=True, text=True)
    return found.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def done_runs(path: Path) -> set[tuple[str, int]]:
    if not path.exists():
        return set()
    with path.open() as handle:
        return {(row["config"], int(row["seed"])) for row in csv.DictReader(handle)}


def train_one(spec_path: str, params: dict, seed: int) -> tuple[list[tuple[dict, float]], str]:
    """Train one config with one seed as a quickstart trial; (rounds with their seconds, ending)."""
    import torch

    from hypir_core.trainer import train
    from hypir_sweep.spec import load_spec

    torch.set_num_threads(1)
    logging.getLogger("hypir_core").setLevel(logging.ERROR)
    spec = load_spec(spec_path)
    with tempfile.TemporaryDirectory() as work:
        cfg = replace(spec.trial_config({**params, "seed": seed}, os.path.join(work, "trial"), name="ground-truth"),
                      report_to="none")
        rounds: list[tuple[dict, float]] = []
        begun = time.time()
        summary = train(cfg, lambda metrics, _: rounds.append((dict(metrics), time.time() - begun)),
                        progress_bar=False)
    return rounds, summary.status  # "completed", "diverged at step N", ...


def rows_of(grid: dict, params: dict, seed: int, rounds, ending: str) -> list[dict]:
    key = config_key(params, grid)
    if not rounds:  # failed before its first validation round: one row says so
        return [{"config": key, "seed": seed, **params, "round": 0, "step": "", **dict.fromkeys(METRICS, ""),
                 "seconds": "", "ending": ending}]
    return [{"config": key, "seed": seed, **params, "round": index, "step": metrics["step"],
             **{m: f"{metrics[m]:.6f}" if m in metrics else "" for m in METRICS}, "seconds": f"{seconds:.1f}", "ending": ending}
            for index, (metrics, seconds) in enumerate(rounds, start=1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", choices=sorted(GRIDS), default="quickstart")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per config: the base config's and the next ones")
    parser.add_argument("--workers", type=int, default=2, help="runs at once (one torch thread each)")
    parser.add_argument("--out", help="the CSV (default bench/data/<grid>_grid.csv)")
    parser.add_argument("--spec", default=str(ROOT / "sweeps" / "quickstart.yaml"))
    args = parser.parse_args()
    from tqdm import tqdm

    from hypir_sweep.spec import load_spec

    grid = GRIDS[args.grid]
    spec = load_spec(args.spec)
    seeds = [spec.base.seed + i for i in range(args.seeds)]
    out = Path(args.out or TABLES[args.grid])
    out.parent.mkdir(parents=True, exist_ok=True)
    meta_path = out.with_suffix(".json")
    commit = trainer_commit()
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("trainer_commit") != commit:
            raise SystemExit(f"{out} was built with the trainer at {meta.get('trainer_commit')}, this is {commit}: "
                             f"rows from two trainers would mix; move the table aside to build it again.")
    meta = {"grid": args.grid, "values": grid, "seeds": seeds, "spec": os.path.relpath(args.spec, ROOT),
            "overrides": dict(spec.overrides), "max_rounds": spec.max_rounds, "trainer_commit": commit,
            "built": date.today().isoformat(), "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
            "python": platform.python_version(), "torch": _torch_version(), "workers": args.workers}
    meta_path.write_text(json.dumps(meta, indent=1, default=str) + "\n")
    done = done_runs(out)
    todo = [(p, s) for s in seeds for p in grid_configs(grid) if (config_key(p, grid), s) not in done]
    print(f"{len(done)} runs already in {out}; {len(todo)} to run ({len(grid_configs(grid))} configs x seeds "
          f"{seeds}, {spec.max_rounds} rounds of {spec.base.validation_steps} steps, {args.workers} workers)")
    started = time.time()
    new_file = not out.exists() or out.stat().st_size == 0
    with out.open("a", newline="") as handle, ProcessPoolExecutor(args.workers) as pool:
        writer = csv.DictWriter(handle, fieldnames=columns(grid))
        if new_file:
            writer.writeheader()
        futures = {pool.submit(train_one, args.spec, p, s): (p, s) for p, s in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc=f"{args.grid} grid", unit="run"):
            params, seed = futures[future]
            rounds, ending = future.result()
            writer.writerows(rows_of(grid, params, seed, rounds, ending))
            handle.flush()
    elapsed = time.time() - started
    print(f"ran {len(todo)} runs in {elapsed / 60:.1f} min")
    return 0


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    sys.exit(main())
