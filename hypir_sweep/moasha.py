"""Pareto sweeps stopped by the front: asynchronous successive halving over several objectives (MOASHA).

ASHA (Li et al. 2020) records each trial's score at rungs (grace_period, grace_period * rf, ...) and lets
a trial go on only while it is among the best 1/rf of the trials recorded at that rung. A Pareto sweep's
trial has no one score, and ranking it by the scalar ``metric`` cuts off the ends of the front (a trial
best in PSNR but poor in LPIPS, say). MOASHA (Schmucker et al. 2021) orders a rung's trials by
non-dominated sorting instead:

- the rung's front first (no other trial at the rung is at least as good in every objective and better
  in one), then the front of the trials left, and so on;
- within one front, the trials that spread it most come first (an epsilon-net): the trial best in the
  first objective, then each time the trial farthest from those already taken, each objective scaled to
  the rung's range. So the two ends of a front survive as well as its middle.

A trial goes on when it is among the first ``ceil(n / reduction_factor)`` of the ``n`` trials recorded at
the rung, itself included: with one objective, ASHA's own rule (``rung_order`` then ranks by value).

``MultiObjectiveASHA`` is Ray's ``AsyncHyperBandScheduler`` with these rungs (each holding a trial's
objectives as values to minimise), so a sweep saves and restores it with Tune's snapshot as it does ASHA
(hypir_sweep.resume.SchedulerState), and on ``--resume`` refills its rungs from the objectives the study
keeps per round (``ROUND_POINTS_ATTR``).
"""

from __future__ import annotations

import math

import numpy as np
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket


def losses_of(result: dict, objectives: list[tuple[str, str]]) -> tuple[float, ...] | None:
    """A result's objectives as values to minimise (a non-finite value as the worst), or None when one is missing."""
    if not all(metric in result for metric, _ in objectives):
        return None
    out = []
    for metric, mode in objectives:
        value = float(result[metric]) if mode == "min" else -float(result[metric])
        out.append(value if math.isfinite(value) else math.inf)
    return tuple(out)


def fronts(losses: np.ndarray) -> list[np.ndarray]:
    """Non-dominated sorting: the indices of each front in turn (minimising every column; equal rows share a front)."""
    losses = np.asarray(losses, dtype=float)
    no_worse = np.all(losses[:, None, :] <= losses[None, :, :], axis=2)
    better = np.any(losses[:, None, :] < losses[None, :, :], axis=2)
    dominates = no_worse & better  # [i, j]: row i dominates row j
    left = np.ones(len(losses), dtype=bool)
    found = []
    while left.any():
        beaten = (dominates & left[:, None]).any(axis=0)
        front = np.flatnonzero(left & ~beaten)
        found.append(front)
        left[front] = False
    return found


def rung_order(losses) -> list[int]:
    """The indices of a rung's trials, best first: front by front, each front spread out from the trial best in the
    first objective (farthest-point order, objectives scaled to the rung's range; ties to the earlier trial)."""
    losses = np.asarray(losses, dtype=float).reshape(len(losses), -1)
    finite = np.isfinite(losses).all(axis=1)
    if finite.any():
        low, high = losses[finite].min(axis=0), losses[finite].max(axis=0)
    else:
        low, high = np.zeros(losses.shape[1]), np.ones(losses.shape[1])
    span = np.where(high > low, high - low, 1.0)
    scaled = np.where(np.isfinite(losses), (losses - low) / span, 2.0)  # a failed objective lies beyond the worst
    order: list[int] = []
    for front in fronts(np.where(np.isfinite(losses), losses, np.inf)):
        points = scaled[front]
        distance = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=2)
        taken = [int(np.argmin(points[:, 0]))]
        gap = distance[taken[0]].copy()  # each point's distance to the nearest one taken
        gap[taken] = -1.0
        while len(taken) < len(front):
            taken.append(int(np.argmax(gap)))
            gap = np.minimum(gap, distance[taken[-1]])
            gap[taken] = -1.0
        order += [int(front[i]) for i in taken]
    return order


class _FrontBracket(_Bracket):
    """Ray's ASHA bracket whose rungs hold each trial's objectives and rank them by ``rung_order``."""

    def on_result(self, trial, cur_iter: int, cur_rew) -> str:
        action = TrialScheduler.CONTINUE
        for milestone, recorded in self._rungs:
            if cur_iter < milestone or trial.trial_id in recorded:
                continue
            if recorded:
                losses = list(recorded.values()) + [tuple(cur_rew)]
                if rung_order(losses).index(len(losses) - 1) >= math.ceil(len(losses) / self.rf):
                    action = TrialScheduler.STOP
            recorded[trial.trial_id] = tuple(cur_rew)
            break
        return action

    def cutoff(self, recorded):
        return None  # no one value divides a rung of several objectives

    def debug_str(self) -> str:
        return "Bracket: " + " | ".join(f"Round {milestone:g}: {len(recorded)} trials"
                                        for milestone, recorded in self._rungs)


class MultiObjectiveASHA(AsyncHyperBandScheduler):
    """ASHA whose rungs rank trials by their objectives' non-dominated sorting (see the module doc). ``metric`` and
    ``mode`` (Tune's, the sweep's scalar) only name what Tune checks results for; the objectives decide."""

    def __init__(self, objectives: list[tuple[str, str]], time_attr: str, max_t: int, grace_period: int = 1,
                 reduction_factor: float = 2):
        super().__init__(time_attr=time_attr, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor)
        self._objectives = list(objectives)
        self._brackets = [_FrontBracket(grace_period, max_t, reduction_factor, 0)]

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        losses = losses_of(result, self._objectives)
        if self._time_attr not in result or losses is None:
            return TrialScheduler.CONTINUE
        if result[self._time_attr] >= self._max_t and self._stop_last_trials:
            action = TrialScheduler.STOP
        else:
            action = self._trial_info[trial.trial_id].on_result(trial, result[self._time_attr], losses)
        if action == TrialScheduler.STOP:
            self._num_stopped += 1
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        losses = losses_of(result or {}, self._objectives)
        if self._time_attr in (result or {}) and losses is not None:
            self._trial_info[trial.trial_id].on_result(trial, result[self._time_attr], losses)
        self._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return (f"Using multi-objective ASHA ({', '.join(m for m, _ in self._objectives)}): "
                f"num_stopped={self._num_stopped}\n" + "\n".join(b.debug_str() for b in self._brackets))
