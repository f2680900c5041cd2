"""The early-stopping audit: do a sweep's early rounds rank trials as their full budget does?

Early stopping compares trials after a few validation rounds and stops the ones behind. That is only
sound if the ranking after those rounds predicts the ranking at the end. From the trials that ran the
full budget, ``audit(sweep)`` measures:

- per round, Spearman's rank correlation of every trial's score at that round with the value the
  leaderboard ranks by (its best round) and with its final round;
- whether the spec's scheduler, replayed with Ray's own ASHA or median-stopping code on the recorded
  curves, would have stopped the eventual winner: with the trials arriving one after another in the
  order they started (each running all its rounds before the next starts), and in how many of 200
  random arrival orders (seeded) it would;
- the smallest ``grace_period``: the first round from which every round a scheduler can stop at (all
  but the last) correlates with the leaderboard's value at ``LEVEL`` (0.8) or more.

With fewer than ``MIN_TRIALS`` (4) full-budget trials it says so instead of estimating. Only the
search's trials count (confirmation trials are extra seeds of a few of them). The replay is of the
completed trials alone: in the sweep the stopped trials were in the rungs too, so it shows whether the
rule separates the trials that went the distance, not the exact decisions the sweep made.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hypir_sweep.analysis import Sweep, TrialRow

LEVEL = 0.8  # rank correlation with the full budget's ranking that early stopping should reach
MIN_TRIALS = 4  # fewer full-budget trials give no usable rank correlation
ORDERS = 200  # random arrival orders the scheduler is replayed in
REPLAYED = ("asha", "median")


@dataclass
class Audit:
    """What ``audit`` found; ``lines`` say it in sentences (printed and in the report)."""

    trials: int
    table: pd.DataFrame = field(default_factory=pd.DataFrame)
    grace_period: int | None = None  # the smallest reaching LEVEL; None if no round does (or too few trials)
    winner: str | None = None
    stopped_at: int | None = None  # the round the replay in start order would stop the winner at
    stopped_share: float = math.nan  # share of random arrival orders in which the winner is stopped
    lines: list[str] = field(default_factory=list)


def full_budget(sweep: Sweep) -> list[TrialRow]:
    """The search's trials that ran every round of the budget."""
    return [r for r in sweep.rows if r.status == "completed" and len(r.curve) >= sweep.max_rounds]


def correlations(rows: list[TrialRow], max_rounds: int) -> pd.DataFrame:
    """Per round: how many trials, and Spearman's rho of their scores with their best and their final round."""
    from scipy import stats

    best = [r.best for r in rows]
    final = [r.curve[max_rounds - 1][1] for r in rows]
    records = []
    for index in range(max_rounds):
        scores = [r.curve[index][1] for r in rows]
        records.append({"round": index + 1, "trials": len(rows),
                        "spearman vs best round": _rho(stats, scores, best),
                        "spearman vs final round": _rho(stats, scores, final)})
    return pd.DataFrame.from_records(records)


def _rho(stats, a: list[float], b: list[float]) -> float:
    if len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan  # a constant ranking correlates with nothing
    return float(stats.spearmanr(a, b).statistic)


def smallest_grace(table: pd.DataFrame, level: float = LEVEL) -> int | None:
    """The first round from which every round a scheduler can stop at (all but the budget's last) correlates with
    the best round at ``level`` or more. The last round is left out: nothing is stopped there, and on noisy
    training it correlates least (a best round is often an earlier one)."""
    values = table["spearman vs best round"].tolist()[:-1]
    for index in range(len(values)):
        if all(math.isfinite(v) and v >= level for v in values[index:]):
            return index + 1
    return None


class _Stub:
    """What Ray's schedulers read of a trial, for the replay."""

    def __init__(self, trial_id: str):
        self.trial_id, self.status, self.config = trial_id, "RUNNING", {}


class _NoController:
    def get_live_trials(self):
        return []

    def get_trials(self):
        return []


def replay(rows: list[TrialRow], order: list[str], scheduler: dict, metric: str, mode: str,
           max_rounds: int) -> dict[str, int | None]:
    """The round at which the spec's scheduler (Ray's class, fresh) stops each trial when they arrive in ``order``,
    each running all its rounds before the next; None for a trial it lets finish."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, MedianStoppingRule, TrialScheduler

    settings = _scheduler_settings(scheduler)
    if settings.type == "asha":
        rule = AsyncHyperBandScheduler(time_attr="round", metric=metric, mode=mode, max_t=max_rounds,
                                       grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)
    else:
        rule = MedianStoppingRule(time_attr="round", metric=metric, mode=mode, grace_period=settings.grace_period,
                                  min_samples_required=settings.min_samples_required)
    by_id, controller, stopped = {r.trial: r for r in rows}, _NoController(), {}
    for trial_id in order:
        stub = _Stub(trial_id)
        rule.on_trial_add(controller, stub)
        stopped[trial_id] = None
        result = {}
        for round_number, value in by_id[trial_id].curve[:max_rounds]:
            result = {"round": round_number, metric: value}
            action = rule.on_trial_result(controller, stub, result)
            if action == TrialScheduler.STOP and round_number < max_rounds:
                stopped[trial_id] = round_number
                break
        if stopped[trial_id] is None:
            rule.on_trial_complete(controller, stub, result)
    return stopped


def sweep_scheduler(sweep: Sweep) -> dict:
    """The scheduler a sweep ran with: its spec's keys, with the type it resolved to (a Pareto sweep's default)."""
    written = dict(sweep.spec.get("scheduler") or {})
    return {**written, "type": sweep.spec["scheduler_type"]} if "scheduler_type" in sweep.spec else written


def _scheduler_settings(scheduler: dict):
    from hypir_sweep.spec_schema import Scheduler

    known = {k: v for k, v in (scheduler or {}).items() if k in ("type", "grace_period", "reduction_factor",
                                                                  "min_samples_required")}
    return Scheduler(**known)


def audit(sweep: Sweep, level: float = LEVEL) -> Audit:
    """Rank correlation per round, the scheduler replayed on the full-budget curves, the smallest grace period."""
    rows = full_budget(sweep)
    found = Audit(trials=len(rows))
    if len(rows) < MIN_TRIALS:
        found.lines = [f"Early-stopping audit: {len(rows)} full-budget trial(s), fewer than the {MIN_TRIALS} a rank "
                       f"correlation needs; nothing to say yet about whether early rounds predict the final ranking "
                       f"(more trials, or scheduler type fifo for a few, give it the data)."]
        return found
    found.table = correlations(rows, sweep.max_rounds)
    found.grace_period = smallest_grace(found.table, level)
    scheduler = sweep_scheduler(sweep)
    settings = _scheduler_settings(scheduler)
    pick = max if sweep.mode == "max" else min
    winner = pick(rows, key=lambda r: r.best)
    found.winner = winner.trial
    by_round = found.table.set_index("round")["spearman vs best round"]
    lines = [f"Early-stopping audit over {len(rows)} full-budget trials (Spearman's rho of each round's "
             f"{sweep.metric} with the leaderboard's value, the best round; and with the final round):"]
    lines += [f"  round {int(r['round'])}: {_show(r['spearman vs best round'])} vs best, "
              f"{_show(r['spearman vs final round'])} vs final" for _, r in found.table.iterrows()]
    if found.grace_period is None:
        lines.append(f"No round before the last ranks the trials at rho {level:g} with their best rounds for good: "
                     f"early stopping here ranks trials on noise; prefer scheduler type fifo, or more steps per round.")
    else:
        grace_now = settings.grace_period if settings.type in REPLAYED else None
        now = "" if grace_now is None else (
            f" (the spec's grace_period {grace_now}: rho {_show(by_round.get(grace_now, math.nan))})")
        lines.append(f"Smallest grace_period from which every round before the last reaches rho >= {level:g}: {found.grace_period}{now}.")
    if settings.type in REPLAYED:
        order = [r.trial for r in sorted(rows, key=lambda r: (math.isnan(r.started), r.started, r.trial))]
        found.stopped_at = replay(rows, order, scheduler, sweep.metric, sweep.mode, sweep.max_rounds)[winner.trial]
        rng = np.random.default_rng(0)
        stops = [replay(rows, list(rng.permutation(order)), scheduler, sweep.metric, sweep.mode,
                        sweep.max_rounds)[winner.trial] is not None for _ in range(ORDERS)]
        found.stopped_share = float(np.mean(stops))
        verdict = ("would have stopped it at round " + str(found.stopped_at)) if found.stopped_at else "lets it finish"
        lines.append(f"The spec's scheduler ({_describe(settings)}) replayed on these curves, trials arriving one at a "
                     f"time in the order they started: it {verdict}; in {found.stopped_share:.0%} of {ORDERS} random "
                     f"arrival orders it stops the winner, trial {winner.trial}.")
    else:
        why = {"fifo": "it stops no trial early.",
               "moasha": f"not replayed (it stops by the front of the objectives, not by {sweep.metric}); the "
                         f"correlations above still say whether early rounds rank trials as the budget does.",
               }.get(settings.type, "not replayed (its brackets depend on which trials ran side by side); the "
                                    "correlations above still say whether early rounds rank trials as the budget does.")
        lines.append(f"Scheduler type {settings.type}: {why}")
    _ema_hint(sweep, found, settings, lines, level)
    found.lines = lines
    return found


def _describe(settings) -> str:
    if settings.type == "asha":
        return f"asha, grace_period {settings.grace_period}, reduction_factor {settings.reduction_factor}"
    return f"median, grace_period {settings.grace_period}, min_samples_required {settings.min_samples_required}"


def _ema_hint(sweep: Sweep, found: Audit, settings, lines: list[str], level: float) -> None:
    """When validation scores the EMA from the initial LoRA and the first rounds rank poorly, name the way out."""
    base = sweep.spec.get("base_resolved") or {}
    if not base.get("use_ema") or base.get("ema_warmup") or found.table.empty:
        return
    first = found.table["spearman vs best round"].iloc[0]
    if math.isfinite(first) and first >= level:
        return
    lines.append(f"Validation scores the EMA of the LoRA (ema_decay {base.get('ema_decay')}, from the initial "
                 f"weights), which lags most in the first rounds; ema_warmup: true in the base config (or the "
                 f"spec's overrides) makes those rounds score the trained weights, at the price of a departure from "
                 f"the users' trainer (BENCHMARKS.md, EMA section).")


def _show(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.2f}"


def section(sweep: Sweep, out_dir: str, plots_dir: str) -> tuple[list[str], list, str]:
    """Run the audit; write early_stopping_audit.csv and its figure; return (lines, report figures, report HTML)."""
    from hypir_sweep import trust_plots

    found = audit(sweep)
    path = os.path.join(out_dir, "early_stopping_audit.csv")
    if found.table.empty:
        pd.DataFrame(columns=["round", "trials", "spearman vs best round", "spearman vs final round"]).to_csv(
            path, index=False)
        return found.lines, [], "".join(f"<p>{line}</p>" for line in found.lines)
    found.table.to_csv(path, index=False)
    settings = _scheduler_settings(sweep_scheduler(sweep))
    figure = trust_plots.rank_correlation(found.table, LEVEL, settings.grace_period if settings.type in REPLAYED
                                          else None, found.grace_period, os.path.join(plots_dir,
                                                                                      "early_stopping_audit.png"))
    caption = (f"Spearman's rho of each round's {sweep.metric} with the best round (what the leaderboard ranks by) "
               f"and with the final round, over {found.trials} full-budget trials; the dashed line is rho {LEVEL:g}.")
    html = "".join(f"<p>{line}</p>" for line in found.lines)
    return found.lines, [("Early-stopping audit", figure, caption)], html
