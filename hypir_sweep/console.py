"""What a running sweep prints: Ray's trial table every 30 seconds and one line per finished round.

Ray's own reporter also prints a configuration box as each trial starts and a result box as it ends
(about 20 lines a trial), and every trial process forwards its logs (model loading, progress bars,
library banners). By default a sweep shows neither: Ray's reporter runs silent (it still prints trial
errors) and this callback prints Ray's table itself. ``launch.py SPEC --verbose`` brings both back.
"""

from __future__ import annotations

import math
import time

from ray.tune import Callback

from hypir_sweep.search import ENDING, ROUND


class SweepConsole(Callback):
    """A line for each trial round as it arrives (and for each trial that ends short), and, when ``table``,
    Ray's trial table every 30 seconds and at the end."""

    def __init__(self, metric: str, mode: str, max_rounds: int, param_space: dict, num_samples: int,
                 table: bool = True):
        self.metric, self.mode, self.max_rounds, self.table = metric, mode, max_rounds, table
        self.param_space, self.num_samples = param_space, num_samples
        self._reporter = None

    def setup(self, **info) -> None:
        if self.table:
            from ray.tune.experimental.output import AirVerbosity, TuneTerminalReporter

            # Ray's table, printed by us: as a callback of its own it would also print its per-trial boxes.
            self._reporter = TuneTerminalReporter(AirVerbosity.DEFAULT, num_samples=self.num_samples,
                                                  metric=self.metric, mode=self.mode, config=self.param_space,
                                                  progress_metrics=[ROUND])
            self._reporter.setup(start_time=time.time(), total_samples=info.get("total_num_samples"))

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if self._reporter is not None:
            self._reporter.print_heartbeat(trials, _resources(trials))

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        print(round_line(trial.trial_id, result, self.metric, self.max_rounds), flush=True)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        print(f"trial {trial.trial_id} failed; retrying it from its last round (error in {trial.error_file})",
              flush=True)

    def on_experiment_end(self, trials: list, **info) -> None:
        if self._reporter is not None:
            self._reporter.print_heartbeat(trials, _resources(trials), force=True)

    def __getstate__(self) -> dict:  # saved with the tuner: Ray's reporter is made anew in setup
        return {**self.__dict__, "_reporter": None}


def _resources(trials: list) -> str:
    running = [t for t in trials if t.status == "RUNNING"]
    return f"Trials running: {len(running)} of {len(trials)}"


def round_line(trial_id: str, result: dict, metric: str, max_rounds: int) -> str:
    """``trial 1a2b3c4d round 3/10: val/Final_Score 27.4512``, or how a trial ended short of its budget."""
    if result.get(ENDING):
        return f"trial {trial_id} ended: {result[ENDING]}"
    value = result.get(metric)
    shown = f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else str(value)
    return f"trial {trial_id} round {result.get(ROUND, '?')}/{max_rounds}: {metric} {shown}"
