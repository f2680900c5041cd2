"""The perception-distortion front of a Pareto sweep, and picking a point on it.

A Pareto sweep (``objectives:`` in its spec) trades off 2-3 metrics, e.g. PSNR (fidelity) against
LPIPS (perceptual quality), as in Blau and Michaeli's perception-distortion trade-off (CVPR 2018).
Each trial that ran the full budget is one point: its objectives at its last round, which its final
weights (``HYPIR_sd2_final.pth``) give. Early-stopped trials are not points (their scores come from
a smaller budget).

- ``front(sweep)``: the non-dominated points (``non_dominated(losses)``: the same test on plain
  numbers, which the PSNR-LPIPS plot uses).
- ``hypervolume(rows, objectives, reference)``: the objective-space volume the points dominate beyond
  a reference point (the users' baseline), computed by Optuna's own hypervolume code.
- ``knee(rows, objectives)``: the front point closest to the ideal corner once each objective is scaled
  to [0, 1] over the front: the balanced choice.
- ``pick(sweep, constraints, target)``: the best trial for ``target`` among those meeting constraints
  such as ``val/LPIPS<=0.08``.
"""

from __future__ import annotations

import math
import operator
import re

import numpy as np

from hypir_sweep.analysis import AnalysisError, Sweep, TrialRow

_CONSTRAINT = re.compile(r"^\s*(?P<metric>[\w/]+)\s*(?P<op><=|>=|<|>)\s*(?P<value>[-+0-9.eE]+)\s*$")
_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


def points(sweep: Sweep) -> list[TrialRow]:
    """Full-budget trials with every objective measured at their last round."""
    return [row for row in sweep.rows if row.status == "completed"
            and all(math.isfinite(row.final_metrics.get(metric, math.nan)) for metric, _ in sweep.objectives)]


def _loss(row: TrialRow, objectives: list[tuple[str, str]]) -> np.ndarray:
    """The row's objectives as values to minimise."""
    return np.array([row.final_metrics[m] if mode == "min" else -row.final_metrics[m] for m, mode in objectives])


def _dominates(loss_a: np.ndarray, loss_b: np.ndarray) -> bool:
    # No worse in every objective and better in one: equal points do not dominate each other.
    return bool(np.all(loss_a <= loss_b) and np.any(loss_a < loss_b))


def dominates(a: TrialRow, b: TrialRow, objectives: list[tuple[str, str]]) -> bool:
    """Whether trial ``a`` is at least as good as ``b`` in every objective and better in one."""
    return _dominates(_loss(a, objectives), _loss(b, objectives))


def non_dominated(losses) -> list[bool]:
    """For each row of ``losses`` (a point's objectives, each to minimise): whether no other row dominates it.

    Equal rows do not dominate each other, so tied points are all on the front.
    """
    rows = [np.asarray(row, dtype=float) for row in losses]
    return [not any(_dominates(other, row) for other in rows) for row in rows]


def front(sweep: Sweep) -> list[TrialRow]:
    """The non-dominated full-budget trials, ordered by the first objective (best first)."""
    candidates = points(sweep)
    keep = non_dominated([_loss(r, sweep.objectives) for r in candidates])
    found = [row for row, kept in zip(candidates, keep) if kept]
    return sorted(found, key=lambda r: _loss(r, sweep.objectives)[0])


def hypervolume(rows: list[TrialRow], objectives: list[tuple[str, str]], reference: dict[str, float]) -> float:
    """Volume of objective space that ``rows`` dominate beyond ``reference`` (0 if none beats it)."""
    from optuna._hypervolume import compute_hypervolume  # Optuna's WFG implementation, as its plots use

    ref = np.array([reference[m] if mode == "min" else -reference[m] for m, mode in objectives])
    losses = np.array([_loss(r, objectives) for r in rows]).reshape(-1, len(objectives))
    better = losses[np.all(losses < ref, axis=1)]
    return float(compute_hypervolume(better, ref)) if len(better) else 0.0


def knee(rows: list[TrialRow], objectives: list[tuple[str, str]]) -> TrialRow:
    """The point closest to the ideal corner, each objective scaled to [0, 1] over ``rows``."""
    losses = np.array([_loss(r, objectives) for r in rows])
    low, span = losses.min(axis=0), np.ptp(losses, axis=0)
    scaled = (losses - low) / np.where(span > 0, span, 1.0)
    return rows[int(np.argmin(np.linalg.norm(scaled, axis=1)))]


def parse_constraints(texts: list[str], known: set[str]) -> list[tuple[str, str, float]]:
    """``["val/LPIPS<=0.08", ...]`` as (metric, operator, value); a bad one is an error in one sentence."""
    parsed = []
    for text in texts:
        match = _CONSTRAINT.match(text)
        if not match:
            raise AnalysisError(f"--pick '{text}' must be 'knee' or a condition such as 'val/LPIPS<=0.08' "
                                f"(operators <=, >=, <, >).")
        if match["metric"] not in known:
            raise AnalysisError(f"--pick '{text}' names {match['metric']}, which the trials do not report; use one of "
                                f"{', '.join(sorted(known))}.")
        parsed.append((match["metric"], match["op"], float(match["value"])))
    return parsed


def pick(sweep: Sweep, choices: list[str], target: tuple[str, str] | None) -> tuple[TrialRow, str]:
    """The trial ``--pick`` names, and a sentence saying why: ``knee``, or constraints plus a target to optimise."""
    candidates = points(sweep)
    if not candidates:
        raise AnalysisError(f"No trial of sweep '{sweep.name}' has run the full budget yet, so there is no point to "
                            f"pick; analyze again once one has.")
    if choices == ["knee"]:
        if not sweep.objectives:
            raise AnalysisError("--pick knee needs a Pareto sweep (objectives: in its spec); this sweep has one metric.")
        chosen = knee(front(sweep), sweep.objectives)
        return chosen, "the knee of the front (closest to the ideal corner, objectives scaled over the front)"
    known = set().union(*(r.final_metrics for r in candidates))
    constraints = parse_constraints(choices, known)
    if target is None:
        metric, mode = sweep.objectives[0] if sweep.objectives else (sweep.metric, sweep.mode)
    else:
        metric, mode = target
        if metric not in known:
            raise AnalysisError(f"--maximize/--minimize {metric}: the trials do not report it; use one of "
                                f"{', '.join(sorted(known))}.")
    meeting = [r for r in candidates if all(_OPS[op](r.final_metrics[m], v) for m, op, v in constraints)]
    if not meeting:
        ranges = "; ".join(f"{m} spans {min(r.final_metrics[m] for r in candidates):.4g} to "
                           f"{max(r.final_metrics[m] for r in candidates):.4g}" for m, _, _ in constraints)
        raise AnalysisError(f"No full-budget trial meets {' and '.join(choices)} ({ranges}); loosen the condition.")
    chosen = (max if mode == "max" else min)(meeting, key=lambda r: r.final_metrics[metric])
    return chosen, f"{' and '.join(choices)}, then the {'highest' if mode == 'max' else 'lowest'} {metric}"
