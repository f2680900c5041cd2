"""The single-run reporter: ``output_dir/summary.json`` rewritten after every round, so a crash loses nothing."""

from __future__ import annotations

import os
import time

from hypir_core.files import write_json
from hypir_core.metrics import best_round


class JsonSummaryReporter:
    """A ``report(metrics, checkpoint_dir)`` callback that keeps summary.json up to date.

    summary.json holds the resolved config, every validation round, the best round and the run's
    status ("running" until ``finish`` is called with the final status).
    """

    def __init__(self, output_dir: str, config: dict, rounds: list[dict] | None = None, extra: dict | None = None):
        self.path = os.path.join(output_dir, "summary.json")
        # ``extra`` is in the very first write: a process killed right after it must not lose it.
        self.data = {"status": "running", "config": config, "rounds": list(rounds or []), "best_round": None,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S"), **(extra or {})}
        os.makedirs(output_dir, exist_ok=True)
        self._write()

    def __call__(self, metrics: dict, checkpoint_dir: str | None) -> None:
        step = len(self.data["rounds"])
        self.data["rounds"].append({"round": step + 1, "metrics": metrics, "checkpoint": checkpoint_dir})
        self.data["best_round"] = best_round(self.data["rounds"])
        self._write()

    def finish(self, status: str, **extra) -> None:
        """Record how the run ended (and anything else worth keeping, e.g. weights paths)."""
        self.data.update(status=status, finished=time.strftime("%Y-%m-%dT%H:%M:%S"), **extra)
        self._write()

    def _write(self) -> None:
        write_json(self.path, self.data)
