"""A sweep's finalists ranked by their mean over seeds, with the spread, a 95% interval and a test of the winner.

Each finalist is a search trial that ran the full budget and was trained again with new seeds
(hypir_sweep.confirm). Its scores are the best round of every seed's run, the search trial's own
(the base config's seed) included: the value the leaderboard ranks by, so the mean is comparable
with it. The interval is Student's t (mean +- t(0.975, n-1) * sd / sqrt(n)). Whether the winner
is distinguishable from the runner-up is Welch's t-test (unequal variances) at the 5% level: with
2-3 seeds per finalist it only separates differences that are large against the seed spread, and
says so otherwise instead of ranking them on noise.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import pandas as pd

from hypir_sweep.analysis import Sweep, TrialRow

LEVEL = 0.95
ALPHA = 0.05


@dataclass
class Finalist:
    """A search trial and its scores over seeds: (seed, best-round value), the search trial's first."""

    row: TrialRow
    scores: list[tuple[int, float]]
    not_scored: list[str] = field(default_factory=list)  # confirmation trials that did not run the full budget

    @property
    def values(self) -> list[float]:
        return [v for _, v in self.scores]

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return float(sum(self.values) / self.n)

    @property
    def sd(self) -> float:
        """Sample standard deviation over seeds (NaN with one seed)."""
        if self.n < 2:
            return math.nan
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def half_width(self) -> float:
        """Half the width of the 95% t interval of the mean (NaN with one seed)."""
        from scipy import stats

        if self.n < 2:
            return math.nan
        return float(stats.t.ppf(0.5 + LEVEL / 2, self.n - 1) * self.sd / math.sqrt(self.n))


def finalists(sweep: Sweep) -> list[Finalist]:
    """The confirmed search trials, best mean first (the sweep's mode); [] when nothing was confirmed."""
    base_seed = int(sweep.spec["base_resolved"].get("seed", 0))
    by_trial: dict[str, Finalist] = {}
    search = {r.trial: r for r in sweep.rows}
    for row in sweep.confirm_rows:
        finalist = search.get(row.confirms)
        if finalist is None or not math.isfinite(finalist.best):
            continue
        entry = by_trial.setdefault(finalist.trial, Finalist(finalist, [(base_seed, finalist.best)]))
        if row.status == "completed" and math.isfinite(row.best):
            if row.seed not in {seed for seed, _ in entry.scores}:  # a pair run twice trains the same run twice
                entry.scores.append((row.seed, row.best))
        else:
            entry.not_scored.append(f"seed {row.seed}: {row.status}" + (f" ({row.note})" if row.note else ""))
    ranked = sorted(by_trial.values(), key=lambda f: (-f.mean if sweep.mode == "max" else f.mean, f.row.rank))
    for entry in ranked:
        entry.scores[1:] = sorted(entry.scores[1:])
    return ranked


def welch(a: Finalist, b: Finalist) -> float:
    """Welch's two-sided p-value for equal means of two finalists' scores (NaN when either has one seed, or
    both have no spread)."""
    from scipy import stats

    if a.n < 2 or b.n < 2 or (a.sd == 0 and b.sd == 0):
        return math.nan
    return float(stats.ttest_ind(a.values, b.values, equal_var=False).pvalue)


def verdict(ranked: list[Finalist], metric: str) -> str:
    """One sentence: whether the best mean is distinguishable from the runner-up's."""
    if len(ranked) < 2:
        return "Only one finalist was confirmed: nothing to tell it apart from."
    winner, runner_up = ranked[0], ranked[1]
    p = welch(winner, runner_up)
    gap = abs(winner.mean - runner_up.mean)
    head = (f"Trial {winner.row.trial} has the best mean {metric} ({winner.mean:.4f} over {winner.n} seeds), "
            f"{gap:.4f} ahead of trial {runner_up.row.trial} ({runner_up.mean:.4f} over {runner_up.n})")
    if math.isnan(p):
        return head + "; too few seeds (or no spread) to test the difference (Welch's t-test needs 2 seeds each)."
    if p < ALPHA:
        return head + f": distinguishable (Welch's t-test p = {p:.3g} < {ALPHA:g})."
    return (head + f": not distinguishable from it (Welch's t-test p = {p:.3g}); the seed spread covers the gap, "
            f"so either is as good a choice (more seeds: confirm.seeds).")


def table(ranked: list[Finalist], metric: str) -> pd.DataFrame:
    """One row per finalist: rank by mean, trial, search rank, seeds, mean, sd, 95% interval, range, values."""
    rows = []
    for index, entry in enumerate(ranked, start=1):
        low, high = entry.mean - entry.half_width, entry.mean + entry.half_width
        rows.append({"rank by mean": index, "trial": entry.row.trial, "search rank": entry.row.rank,
                     "seeds": entry.n, f"mean {metric}": entry.mean, "sd": entry.sd, "95% low": low,
                     "95% high": high, "min": min(entry.values), "max": max(entry.values),
                     "by seed": "; ".join(f"{seed}: {value:.4f}" for seed, value in entry.scores),
                     "not scored": "; ".join(entry.not_scored),
                     **entry.row.params})
    return pd.DataFrame.from_records(rows)


def summary_lines(sweep: Sweep) -> list[str]:
    """What the end of a sweep and analyze.py print of the confirmation (nothing when there was none)."""
    ranked = finalists(sweep)
    if not ranked:
        return []
    lines = [f"Finalists over seeds (best round, mean +- sd, 95% t interval; the search's run is seed "
             f"{ranked[0].scores[0][0]}):"]
    for entry in ranked:
        spread = "" if entry.n < 2 else f" +- {entry.sd:.4f}, [{entry.mean - entry.half_width:.4f}, " \
                                        f"{entry.mean + entry.half_width:.4f}]"
        missing = f"; not scored: {', '.join(entry.not_scored)}" if entry.not_scored else ""
        lines.append(f"  trial {entry.row.trial} (search rank {entry.row.rank}): {entry.mean:.4f}{spread} over "
                     f"{entry.n} seeds{missing}")
    lines.append(verdict(ranked, sweep.metric))
    return lines


def section(sweep: Sweep, out_dir: str, plots_dir: str) -> tuple[list[str], list, str, Finalist | None]:
    """Write finalists.csv and the intervals' figure; return (printed lines, report figures, report HTML,
    the best finalist by mean or None)."""
    from hypir_sweep import trust_plots

    ranked = finalists(sweep)
    if not ranked:
        return [], [], "", None
    frame = table(ranked, sweep.metric)
    frame.to_csv(os.path.join(out_dir, "finalists.csv"), index=False)
    lines = summary_lines(sweep)
    figure = trust_plots.finalist_intervals(ranked, sweep.metric, os.path.join(plots_dir, "finalists.png"))
    caption = (f"Each finalist's {sweep.metric} (best round) per seed (dots), its mean and 95% t interval; "
               f"best mean first. {lines[-1]}")
    html = "".join(f"<p>{line}</p>" for line in lines) + frame.to_html(index=False, float_format=lambda v: f"{v:.4g}")
    return lines, [("Finalists over seeds", figure, caption)], html, ranked[0]
