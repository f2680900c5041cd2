#!/usr/bin/env python
"""Ground truth for the search benchmark: every config of a grid over the quickstart's space, run to the
full budget, every round's metrics in one CSV.

    python bench/ground_truth.py [--out bench/data/quickstart_grid.csv] [--spec sweeps/quickstart.yaml]

Each config trains exactly as a quickstart trial does (``SweepSpec.trial_config``: the quickstart's base
config, overrides and budget), in this process, one after the other. Training is deterministic given
the config, so the table is what any sweep over these values would measure. The CSV is appended to as
each config finishes: an interrupted build continues where it stopped when run again.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hypir_core.metrics import FINAL_SCORE  # noqa: E402

# Three values per parameter of sweeps/quickstart.yaml: its bounds and a middle point (geometric for
# the log-scaled ones), 81 configs in all.
GRID = {
    "lambda_l2": [0.5, 2.0, 4.0],
    "lambda_l1": [0.5, 2.0, 4.0],
    "lambda_gan": [0.01, 0.1, 1.0],
    "lr_G": [1.0e-4, 5.5e-4, 3.0e-3],
}
METRICS = (FINAL_SCORE, "val/PSNR", "val/SSIM", "val/LPIPS")
COLUMNS = ["config", *GRID, "round", "step", *METRICS, "seconds"]


def grid_configs() -> list[dict]:
    return [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]


def config_key(params: dict) -> str:
    return ",".join(f"{k}={params[k]!r}" for k in GRID)


def done_configs(path: Path) -> set[str]:
    if not path.exists():
        return set()
    with path.open() as handle:
        return {row["config"] for row in csv.DictReader(handle)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "data" / "quickstart_grid.csv"))
    parser.add_argument("--spec", default=str(ROOT / "sweeps" / "quickstart.yaml"))
    args = parser.parse_args()
    import torch
    from tqdm import tqdm

    from hypir_core.trainer import train
    from hypir_sweep.spec import load_spec

    logging.getLogger("hypir_core").setLevel(logging.WARNING)
    spec = load_spec(args.spec)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = done_configs(out)
    todo = [p for p in grid_configs() if config_key(p) not in done]
    print(f"{len(done)} of {len(grid_configs())} configs already in {out}; {len(todo)} to run "
          f"({spec.max_rounds} rounds of {spec.base.validation_steps} steps each, torch threads "
          f"{torch.get_num_threads()}).")
    started = time.time()
    with out.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        if not done:
            writer.writeheader()
        for params in tqdm(todo, desc="grid", unit="config"):
            with tempfile.TemporaryDirectory() as work:
                cfg = replace(spec.trial_config(params, os.path.join(work, "trial"), name="ground-truth"),
                              report_to="none")
                rounds = []
                begun = time.time()
                summary = train(cfg, lambda metrics, _: rounds.append((metrics, time.time() - begun)),
                                progress_bar=False)
            if summary.status != "completed":
                print(f"{config_key(params)}: {summary.status}")
            for index, (metrics, seconds) in enumerate(rounds, start=1):
                writer.writerow({"config": config_key(params), **params, "round": index, "step": metrics["step"],
                                 **{m: f"{metrics[m]:.6f}" for m in METRICS}, "seconds": f"{seconds:.1f}"})
            handle.flush()
    elapsed = time.time() - started
    print(f"ran {len(todo)} configs in {elapsed / 60:.1f} min ({elapsed / max(1, len(todo)):.1f} s per config)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
