#!/usr/bin/env python
"""Concurrent writers in one SwanLab local-mode folder: does the dashboard database stay whole?

A sweep's trials are separate processes logging into one folder (``sweep_results/<name>/swanlog``),
whose ``runs.swanlab`` SQLite database is what ``swanlab watch`` shows. This starts N processes at
the same moment, each logging the trainer's metric names for S steps into one folder, then checks
the database: every experiment present under its name, every metric a chart of every experiment,
every project-level comparison chart holding all N experiments, and every value on disk.

  python bench/swanlab_local_writers.py --writers 4 --repeats 5          # through hypir_core.tracking
  python bench/swanlab_local_writers.py --writers 4 --repeats 5 --stock  # swanlab.init(mode="local") as is

Needs the dashboard extra (pip install -e '.[dashboard]'). Uses a temporary SWANLAB_ROOT (no login).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TYPES = ("Blur", "Haze", "Lowlight", "Rain", "Snow")
KEYS = ([f"loss/{k}" for k in ("G_total", "G_mse", "G_l1", "G_lpips", "G_ssim", "G_disc", "D", "D_logits_real",
                               "D_logits_fake")]
        + [f"val/{k}" for k in ("PSNR", "SSIM", "LPIPS", "Final_Score")]
        + [f"val/{t}/{m}" for t in TYPES for m in ("PSNR", "SSIM", "LPIPS")])


def _writer(index: int, logdir: str, steps: int, stock: bool, start) -> None:
    name = f"bench-trial{index:02d}"
    start.wait()
    if stock:
        import swanlab

        run = swanlab.init(mode="local", project="bench", name=name, group="bench", config={"index": index},
                           log_dir=logdir, settings=swanlab.Settings(interactive=False))
        for step in range(1, steps + 1):
            run.log({k: float(index * 1000 + step) for k in KEYS}, step=step)
        run.finish()
    else:
        from hypir_core.tracking import make_tracker

        tracker = make_tracker("swanlab", "bench", name, logdir, {"index": index}, group="bench", mode="local")
        assert tracker.mode == "local", tracker.mode
        for step in range(1, steps + 1):
            tracker.log({k: float(index * 1000 + step) for k in KEYS}, step=step)
        tracker.finish()


def check(logdir: str, writers: int, steps: int) -> list[str]:
    """What is missing or wrong in the folder's dashboard database (empty: all there)."""
    problems = []
    db = sqlite3.connect(os.path.join(logdir, "runs.swanlab"))
    if db.execute("pragma integrity_check").fetchone()[0] != "ok":
        problems.append("integrity_check failed")
    names = {f"bench-trial{i:02d}" for i in range(writers)}
    experiments = dict(db.execute("select name, id from experiment").fetchall())
    if set(experiments) != names:
        problems.append(f"experiments {sorted(experiments)} instead of {sorted(names)}")
    for name, exp_id in experiments.items():
        tags = {t for (t,) in db.execute("select name from tag where experiment_id = ?", (exp_id,))}
        if tags != set(KEYS):
            problems.append(f"{name}: {len(tags)} of {len(KEYS)} metrics are charts")
    charts = db.execute("select c.name, count(s.tag_id) from chart c left join source s on s.chart_id = c.id "
                        "where c.project_id is not null group by c.id").fetchall()
    per_name: dict[str, list[int]] = {}
    for name, sources in charts:
        per_name.setdefault(name, []).append(sources)
    for key in KEYS:
        if per_name.get(key) != [writers]:
            problems.append(f"comparison chart {key}: {per_name.get(key)} experiments instead of [{writers}]")
    for (run_id,) in db.execute("select run_id from experiment"):
        for metric in Path(logdir, run_id, "logs").glob("*/*.log"):
            lines = metric.read_text().splitlines()
            if [json.loads(line)["index"] for line in lines] != list(range(1, steps + 1)):
                problems.append(f"{run_id}/{metric.parent.name}: {len(lines)} values instead of {steps}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stock", action="store_true", help="swanlab.init(mode='local') without our folder lock")
    args = parser.parse_args()
    os.environ["SWANLAB_ROOT"] = tempfile.mkdtemp(prefix="swanlab-root-")
    context = mp.get_context("spawn")
    failures = 0
    for repeat in range(args.repeats):
        logdir = tempfile.mkdtemp(prefix="swanlog-")
        start = context.Event()
        processes = [context.Process(target=_writer, args=(i, logdir, args.steps, args.stock, start))
                     for i in range(args.writers)]
        for process in processes:
            process.start()
        time.sleep(3)  # every process imported swanlab: they init at the same moment
        began = time.time()
        start.set()
        for process in processes:
            process.join()
        seconds = time.time() - began
        problems = check(logdir, args.writers, args.steps)
        problems += [f"writer exit code {p.exitcode}" for p in processes if p.exitcode]
        failures += bool(problems)
        print(f"repeat {repeat + 1}: {seconds:.1f} s, {'OK' if not problems else 'BROKEN: ' + '; '.join(problems[:4])}"
              + (f" (+{len(problems) - 4} more)" if len(problems) > 4 else ""), flush=True)
    variant = "swanlab local mode as is" if args.stock else "hypir_core.tracking (folder lock)"
    print(f"{variant}, {args.writers} writers x {args.steps} steps x {len(KEYS)} metrics: "
          f"{failures} of {args.repeats} folders broken")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
