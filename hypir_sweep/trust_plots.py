"""Figures for how far a sweep's winner can be trusted: rank correlation per round, finalists' intervals."""

from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from hypir_sweep.plots import BEST_COLOR, _note, _save


def rank_correlation(table: pd.DataFrame, level: float, grace_now: int | None, grace_needed: int | None,
                     path: str) -> str:
    """Spearman's rho per round against the best and the final round, the target level and the grace periods."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    rounds = table["round"].to_numpy()
    for column, color, marker in (("spearman vs best round", "tab:blue", "o"),
                                  ("spearman vs final round", "tab:orange", "s")):
        ax.plot(rounds, table[column].to_numpy(dtype=float), color=color, marker=marker, label=column)
    ax.axhline(level, color="gray", linestyle="--", linewidth=1, label=f"rho {level:g}")
    if grace_now is not None:
        ax.axvline(grace_now, color="tab:red", linewidth=1, alpha=0.6, label=f"spec's grace_period ({grace_now})")
    if grace_needed is not None and grace_needed != grace_now:
        ax.axvline(grace_needed, color=BEST_COLOR, linewidth=1, alpha=0.8,
                   label=f"smallest grace_period at rho {level:g} ({grace_needed})")
    ax.set_xticks(rounds)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("validation round")
    ax.set_ylabel("Spearman's rho")
    ax.set_title(f"Does round r rank the trials as the full budget does? ({int(table['trials'].iloc[0])} trials)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def finalist_intervals(ranked: list, metric: str, path: str) -> str:
    """Each finalist's scores per seed (dots), mean and 95% t interval (bar), best mean on top."""
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.6 * max(1, len(ranked))))
    if not ranked:
        _note(ax, "no finalist was confirmed")
        return _save(fig, path)
    for position, entry in enumerate(reversed(ranked)):
        color = BEST_COLOR if entry is ranked[0] else "tab:blue"
        values = np.array(entry.values)
        ax.scatter(values, np.full(len(values), position), color=color, alpha=0.6, s=22, zorder=3)
        if math.isfinite(entry.half_width):
            ax.errorbar(entry.mean, position, xerr=entry.half_width, fmt="D", color=color, capsize=5, zorder=4)
        else:
            ax.scatter([entry.mean], [position], marker="D", color=color, zorder=4)
    ax.set_ylim(-0.6, len(ranked) - 0.4)
    ax.set_yticks(range(len(ranked)))
    ax.set_yticklabels([f"{e.row.trial} (n={e.n})" for e in reversed(ranked)])
    ax.set_xlabel(f"{metric} (best round), per seed; mean and 95% t interval")
    ax.set_title("Finalists over seeds")
    ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)
