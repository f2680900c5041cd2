"""Which trial analyze.py exports: the leaderboard's winner, the best finalist by mean, a --pick; and the per-type guard.

``--guard "PSNR>=-0.2"`` (repeatable) with ``--baseline RUN`` exports only a config that loses no more
than the margin on any degradation type against every baseline: for each type, the trial's metric
minus the baseline's (``val/<type>/PSNR``) must be >= -0.2 dB. ``LPIPS<=0.005`` bounds a rise instead
(lower is better); ``SSIM`` and ``Final_Score`` (PSNR + 10*SSIM - 5*LPIPS of that type) work alike.
Among the trials the export would consider, in its order (finalists by mean, then the leaderboard; or
``--pick``'s admitted trials by its goal), the first that passes is exported; if none does, nothing is,
and the shortfall of each is printed. Trials are read where the export reads them: the best round for
the leaderboard's and the finalists' export (the baseline's best round too), the final round with
``--pick`` (the baseline's final round too).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

import pandas as pd

from hypir_sweep import pareto
from hypir_sweep.analysis import AnalysisError, Sweep, TrialRow, _types

_GUARD = re.compile(r"^\s*(?:val/)?(?P<metric>PSNR|SSIM|LPIPS|Final_Score)\s*(?P<op>>=|<=)\s*"
                    r"(?P<margin>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")
SHOWN = 10  # candidates listed when none passes


@dataclass(frozen=True)
class Guard:
    """``metric op margin``: per type, trial minus baseline must be >= margin (or <= margin)."""

    metric: str
    op: str
    margin: float

    def shortfall(self, delta: float) -> float:
        """How far ``delta`` misses the margin (<= 0: it passes); NaN when the metric is missing."""
        if not math.isfinite(delta):
            return math.nan
        return self.margin - delta if self.op == ">=" else delta - self.margin

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.margin:g}"


def parse_guards(texts: list[str]) -> list[Guard]:
    """``["PSNR>=-0.2", "LPIPS<=0.01"]`` as guards; a malformed one is an error in one sentence."""
    guards = []
    for text in texts:
        match = _GUARD.match(text)
        if not match:
            raise AnalysisError(f"--guard '{text}' must be METRIC>=MARGIN or METRIC<=MARGIN with a per-type metric of "
                                f"PSNR, SSIM, LPIPS or Final_Score, e.g. 'PSNR>=-0.2' (lose at most 0.2 dB on any "
                                f"type) or 'LPIPS<=0.01'.")
        guards.append(Guard(match["metric"], match["op"], float(match["margin"])))
    return guards


def type_value(metrics: dict[str, float], kind: str, metric: str) -> float:
    """A degradation type's metric from a round's metrics; Final_Score is computed from that type's three."""
    if metric == "Final_Score":
        psnr, ssim, lpips = (metrics.get(f"val/{kind}/{m}", math.nan) for m in ("PSNR", "SSIM", "LPIPS"))
        return psnr + 10 * ssim - 5 * lpips
    return float(metrics.get(f"val/{kind}/{metric}", math.nan))


@dataclass
class Verdict:
    """One candidate against every guard, type and baseline: its worst shortfall and where."""

    row: TrialRow
    checks: list[dict] = field(default_factory=list)

    @property
    def worst(self) -> dict:
        return max(self.checks, key=lambda c: c["shortfall"] if math.isfinite(c["shortfall"]) else math.inf)

    @property
    def passes(self) -> bool:
        return all(math.isfinite(c["shortfall"]) and c["shortfall"] <= 1e-12 for c in self.checks)


def judge(row: TrialRow, metrics: dict[str, float], baselines: list[tuple[str, dict[str, float]]],
          guards: list[Guard], types: list[str]) -> Verdict:
    """Every (guard, type, baseline) delta of one candidate."""
    verdict = Verdict(row)
    for guard in guards:
        for name, base in baselines:
            for kind in types:
                delta = type_value(metrics, kind, guard.metric) - type_value(base, kind, guard.metric)
                verdict.checks.append({"trial": row.trial, "guard": str(guard), "metric": guard.metric,
                                       "baseline": name, "type": kind,
                                       "delta": delta, "shortfall": guard.shortfall(delta)})
    return verdict


@dataclass
class Choice:
    """The trial analyze.py exports (None when the guard admits none), why, and which of its rounds."""

    row: TrialRow | None
    why: str = ""
    final_round: bool = False  # --pick: its final weights; otherwise its best round's
    lines: list[str] = field(default_factory=list)
    table: pd.DataFrame = field(default_factory=pd.DataFrame)


def _candidates(sweep: Sweep, pick: list[str], target, best_by_mean) -> tuple[list[tuple[TrialRow, str]], bool]:
    """The trials the export considers, best first, each with why it would be chosen; and whether by --pick."""
    if pick:
        ordered, rows = [], list(sweep.rows)
        while True:
            try:
                chosen, why = pareto.pick(replace(sweep, rows=rows), pick, target)
            except AnalysisError:
                if not ordered:
                    raise
                return ordered, True
            ordered.append((chosen, f"picked by {why}"))
            rows = [r for r in rows if r.trial != chosen.trial]
    ordered = []
    if best_by_mean is not None:
        from hypir_sweep import finalists

        for entry in finalists.finalists(sweep):
            ordered.append((entry.row, f"the best mean {sweep.metric} over {entry.n} seeds, {entry.mean:.4f}"
                            if not ordered else f"a finalist, mean {sweep.metric} over {entry.n} seeds "
                                                f"{entry.mean:.4f}"))
    seen = {row.trial for row, _ in ordered}
    ordered += [(r, "") for r in sweep.rows if math.isfinite(r.best) and r.trial not in seen]
    return ordered, False


def choose(sweep: Sweep, pick: list[str], target, best_by_mean, guards: list[Guard],
           baselines: list[tuple[str, dict, int]], final_baselines: list[tuple[str, dict, int]]) -> Choice:
    """The export: without guards the first candidate; with guards the first that passes against every baseline."""
    ordered, by_pick = _candidates(sweep, pick, target, best_by_mean)
    if not ordered:
        return Choice(None)
    if not guards:
        row, why = ordered[0]
        return Choice(row, why, by_pick)
    runs = [(name, metrics) for name, metrics, _ in (final_baselines if by_pick else baselines)]
    types = _types(sweep)
    verdicts = [judge(row, row.final_metrics if by_pick else row.best_metrics, runs, guards, types)
                for row, _ in ordered]
    table = pd.DataFrame([c for v in verdicts for c in v.checks])
    shown = " and ".join(map(str, guards))
    against = ", ".join(name for name, _ in runs)
    passing = next((i for i, v in enumerate(verdicts) if v.passes), None)
    if passing is None:
        lines = [f"Guard {shown} against {against}: no trial passes on every degradation type, so none is exported "
                 f"(best_config.yaml not written). Each candidate's worst type:"]
        for verdict in verdicts[:SHOWN]:
            worst = verdict.worst
            lines.append(f"  trial {verdict.row.trial}: {worst['type']} {worst['metric']} {worst['delta']:+.4g} "
                         f"against {worst['baseline']}, short of the margin by "
                         f"{worst['shortfall']:.4g}")
        return Choice(None, lines=lines, table=table, final_round=by_pick)
    row, why = ordered[passing]
    lines = []
    for verdict in verdicts[:passing]:
        worst = verdict.worst
        lines.append(f"Guard {shown}: trial {verdict.row.trial} fails on {worst['type']} ({worst['delta']:+.4g} "
                     f"against {worst['baseline']}, short by {worst['shortfall']:.4g}).")
    worst = verdicts[passing].worst
    lines.append(f"Guard {shown} against {against}: trial {row.trial} passes on every type (closest: {worst['type']}, "
                 f"{worst['delta']:+.4g} against {worst['baseline']}).")
    reason = f"{why + '; ' if why else ''}the first to pass the guard {shown} against {against}"
    return Choice(row, reason, by_pick, lines, table)
