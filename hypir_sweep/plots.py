"""Figures for a finished (or interrupted) sweep, and a single-file HTML report that embeds them.

Every plot function writes one PNG and returns its path; none of them raises on thin data (one trial,
one round, NaN values, nothing varying): it draws what it can and writes a short note otherwise.
"""

from __future__ import annotations

import base64
import html
import math
import os

import matplotlib

matplotlib.use("Agg")  # figures are only ever written to files, often on a headless machine

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize

from hypir_sweep.pareto import non_dominated

DPI = 110
STATUS_COLORS = {"completed": "tab:blue", "early-stopped": "tab:gray", "diverged": "tab:red",
                 "out of memory": "tab:brown", "refused": "tab:pink", "errored": "black", "unfinished": "tab:orange",
                 "running": "tab:orange"}
BEST_COLOR = "tab:green"
LOG_SPAN = 20.0  # a positive axis spanning more than this factor is drawn in log scale


def _save(fig, path) -> str:
    """Write the figure as PNG, close it (sweeps can draw many) and return the path."""
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return os.fspath(path)


def _note(ax, text: str) -> None:
    """Say in the figure why there is nothing (more) to see, instead of an empty frame."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11,
            bbox={"boxstyle": "round", "facecolor": "lightyellow", "edgecolor": "gray"})


def _finite(values) -> np.ndarray:
    """Float array of the values with non-numbers turned into NaN."""
    return pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(dtype=float)


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float, np.number)) else str(value)


def score_curves(curves: dict[str, list[tuple[int, float]]], status: dict[str, str], metric: str, path: str) -> str:
    """Draw the metric per validation round, one line per trial (x = round as given, 1-based).

    Completed trials are solid and opaque, all others faded; the trial with the highest best value is
    highlighted and named in the legend. Colours stand for status.
    """
    fig, ax = plt.subplots(figsize=(8, 5))
    best_name, best_value = None, -math.inf
    drawn: set[str] = set()
    for name, points in curves.items():
        rounds = _finite(r for r, _ in points)
        values = _finite(v for _, v in points)
        if not np.isfinite(values).any():
            continue
        peak = float(np.nanmax(values))
        if peak > best_value:
            best_name, best_value = name, peak
        state = status.get(name, "running")
        done = state == "completed"
        # A one-round trial has no segment to draw, so every line also gets small markers.
        ax.plot(rounds, values, color=STATUS_COLORS.get(state, "tab:purple"), alpha=1.0 if done else 0.3,
                linewidth=1.6 if done else 0.9, marker="o", markersize=3, label="_nolegend_")
        drawn.add(state)
    if best_name is None:
        _note(ax, "no validation rounds reported yet")
    else:
        best = curves[best_name]
        ax.plot(_finite(r for r, _ in best), _finite(v for _, v in best), color=BEST_COLOR, linewidth=2.8,
                marker="o", markersize=5, zorder=5, label=f"best: {best_name} ({best_value:.4g})")
        for state in sorted(drawn):
            ax.plot([], [], color=STATUS_COLORS.get(state, "tab:purple"),
                    alpha=1.0 if state == "completed" else 0.3, label=state)
        ax.legend(loc="best", fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("validation round")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per validation round")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _clean(importances: dict[str, float]) -> list[tuple[str, float]]:
    """(name, float) pairs; a value that is not a finite number counts as 0 (no measurable importance)."""
    values = _finite((importances or {}).values())
    return [(str(k), float(v) if np.isfinite(v) else 0.0) for k, v in zip(importances or {}, values)]


def param_importance(importances: dict[str, float], path: str, method: str = "fANOVA") -> str:
    """Draw a horizontal bar chart of parameter importances, largest on top, each bar labelled with its value."""
    items = sorted(_clean(importances), key=lambda kv: kv[1])  # barh draws the first item at the bottom
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.45 * len(items) + 1.2)))
    if not items:
        _note(ax, "not enough completed trials to estimate importance")
        ax.set_axis_off()
    else:
        names, values = zip(*items)
        bars = ax.barh(range(len(items)), values, color="tab:blue")
        ax.set_yticks(range(len(items)), names)
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=3, fontsize=9)
        ax.set_xlim(0, max(max(values), 1e-9) * 1.2)  # room for the value labels
        ax.set_xlabel("importance")
    ax.set_title(f"Parameter importance ({method})")
    return _save(fig, path)



def _valid_points(points: pd.DataFrame) -> pd.DataFrame:
    """The rows with both PSNR and LPIPS present as finite numbers."""
    if points is None or len(points) == 0 or not {"psnr", "lpips"} <= set(points.columns):
        return pd.DataFrame(columns=["trial", "psnr", "lpips", "status"])
    frame = points.copy()
    frame["psnr"], frame["lpips"] = _finite(frame["psnr"]), _finite(frame["lpips"])
    return frame[np.isfinite(frame["psnr"]) & np.isfinite(frame["lpips"])]


def pareto_front(points: pd.DataFrame) -> list[str]:
    """Trial names on the PSNR-max / LPIPS-min Pareto front, sorted by LPIPS; rows with NaN are ignored.

    Identical points do not dominate each other, so ties are all on the front.
    """
    frame = _valid_points(points)
    keep = non_dominated(zip(-frame["psnr"].to_numpy(), frame["lpips"].to_numpy()))  # both to minimise
    front = frame[np.array(keep, dtype=bool)].sort_values(["lpips", "psnr", "trial"], ascending=[True, False, True])
    return [str(t) for t in front["trial"]]


def psnr_vs_lpips(points: pd.DataFrame, path: str) -> str:
    """Draw PSNR (y, higher better) against LPIPS (x, lower better), one point per trial coloured by status.

    The Pareto front is connected by a line, drawn with star markers and annotated with trial names.
    """
    frame = _valid_points(points)
    fig, ax = plt.subplots(figsize=(7, 5))
    if frame.empty:
        _note(ax, "no trial has both PSNR and LPIPS")
    else:
        states = frame["status"].astype(str) if "status" in frame else pd.Series("completed", index=frame.index)
        for state in sorted(states.unique()):
            rows = frame[states == state]
            ax.scatter(rows["lpips"], rows["psnr"], s=30, color=STATUS_COLORS.get(state, "tab:purple"),
                       alpha=0.9 if state == "completed" else 0.5, label=state)
        front = frame.set_index(frame["trial"].astype(str)).loc[pareto_front(frame)]
        ax.plot(front["lpips"], front["psnr"], color="tab:red", linewidth=1.5, marker="*", markersize=13,
                zorder=4, label="Pareto front")
        # Tied trials share one point, so they share one label instead of overprinting each other.
        for (lpips, psnr), names in front.groupby(["lpips", "psnr"], sort=False).groups.items():
            ax.annotate(", ".join(names), (lpips, psnr), xytext=(6, 6), textcoords="offset points", fontsize=8)
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("LPIPS (lower is better)")
    ax.set_ylabel("PSNR (higher is better)")
    ax.set_title("PSNR vs LPIPS per trial")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _column_scaled(values: np.ndarray) -> np.ndarray:
    """Each column scaled to [0, 1] on its own, so every type's best trial is brightest; flat columns sit mid-way."""
    low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    span = np.where(high > low, high - low, np.nan)
    scaled = (values - low) / span
    return np.where(np.isnan(span) & ~np.isnan(values), 0.5, scaled)


def type_heatmap(table: pd.DataFrame, path: str, title: str = "PSNR per degradation type") -> str:
    """Draw a heatmap of trials (rows, in the given order) by degradation type (columns), values annotated.

    Colour is normalised per column (higher is brighter), so the best trial for each type stands out.
    """
    rows, cols = (len(table.index), len(table.columns)) if table is not None else (0, 0)
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * cols + 3), max(2.5, 0.4 * rows + 1.5)))
    values = np.array([_finite(table[c]) for c in table.columns]).T if rows and cols else np.empty((0, 0))
    if values.size == 0 or not np.isfinite(values).any():
        _note(ax, "no per-type values to show")
        ax.set_axis_off()
    else:
        with np.errstate(all="ignore"):  # all-NaN columns are expected and shown as "n/a"
            scaled = _column_scaled(values)
        cmap = plt.get_cmap("viridis").with_extremes(bad="lightgray")
        ax.imshow(np.ma.masked_invalid(scaled), cmap=cmap, vmin=0, vmax=1, aspect="auto")
        for (r, c), value in np.ndenumerate(values):
            dark = np.isfinite(scaled[r, c]) and scaled[r, c] < 0.6
            ax.text(c, r, "n/a" if np.isnan(value) else f"{value:.2f}", ha="center", va="center",
                    fontsize=8, color="white" if dark else "black")
        ax.set_xticks(range(cols), [str(c) for c in table.columns])
        ax.set_yticks(range(rows), [str(i) for i in table.index])
        ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False)
    ax.set_title(title)
    return _save(fig, path)


def _axis_positions(values: pd.Series) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """One parallel-coordinates axis: values mapped to [0, 1] and the (position, label) ticks to write."""
    numbers = _finite(values)
    present = int(values.notna().sum())
    # Numeric only if every present value is a number (bools and strings are categories).
    numeric = values.dtype != bool and present > 0 and int(np.isfinite(numbers).sum()) == present
    if not numeric:  # categorical: evenly spaced, one tick per category
        cats = sorted({str(v) for v in values if pd.notna(v)})
        spots = {c: (i / (len(cats) - 1) if len(cats) > 1 else 0.5) for i, c in enumerate(cats)}
        return np.array([spots.get(str(v), np.nan) for v in values]), [(p, c) for c, p in spots.items()]
    low, high = np.nanmin(numbers), np.nanmax(numbers)
    if not high > low:  # constant axis: everything in the middle
        return np.where(np.isfinite(numbers), 0.5, np.nan), [(0.5, _fmt(low))]
    if low > 0 and high / low > LOG_SPAN:
        scaled = (np.log(numbers) - np.log(low)) / (np.log(high) - np.log(low))
        return scaled, [(0.0, _fmt(low)), (1.0, _fmt(high) + " (log)")]
    return (numbers - low) / (high - low), [(0.0, _fmt(low)), (1.0, _fmt(high))]


def parallel_coordinates(frame: pd.DataFrame, params: list[str], metric: str, path: str) -> str:
    """Draw parallel coordinates: one axis per parameter and a last one for the metric, one line per trial.

    Lines are coloured by the metric; each axis is scaled to its own range (log for wide positive ranges)
    and labelled with its real min and max, or with its categories.
    """
    frame = frame if frame is not None else pd.DataFrame()
    columns = [p for p in params if p in frame.columns] + ([metric] if metric in frame.columns else [])
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(columns) + 2), 5))
    if len(frame) == 0 or not columns:
        _note(ax, "no trials to draw")
        ax.set_axis_off()
        return _save(fig, path)
    axes = [_axis_positions(frame[c].reset_index(drop=True)) for c in columns]
    ys = np.column_stack([pos for pos, _ in axes])
    scores = _finite(frame[metric]) if metric in frame.columns else np.full(len(frame), np.nan)
    ok = np.isfinite(scores)
    norm = Normalize(*(np.nanmin(scores[ok]), np.nanmax(scores[ok])) if ok.any() else (0, 1))
    cmap = plt.get_cmap("viridis")
    # Best trials last, so they are drawn on top of the crowd.
    for row in np.argsort(np.where(ok, scores, -np.inf), kind="stable"):
        color = cmap(norm(scores[row])) if ok[row] else "lightgray"
        ax.plot(range(len(columns)), ys[row], color=color, alpha=0.85, linewidth=1.4,
                marker="o" if len(columns) == 1 else None, markersize=4)
    for x, (_, ticks) in enumerate(axes):
        ax.axvline(x, color="black", linewidth=0.8)
        for pos, label in ticks:
            ax.text(x + 0.03, pos, label, fontsize=7, va="center", ha="left",
                    bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
    ax.set_xticks(range(len(columns)), columns, rotation=20, ha="right")
    ax.set_xlim(-0.2, len(columns) - 0.5)
    ax.set_ylim(-0.05, 1.05)
    ax.set_yticks([])
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric)
    ax.set_title(f"Parameters and {metric} per trial" + ("" if params else " (no parameters vary)"))
    return _save(fig, path)


CSS = """body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}img{max-width:100%;height:auto}
table{border-collapse:collapse;margin:0.5em 0;font-size:0.9em}th,td{border:1px solid #999;padding:3px 8px}
th{background:#eee}p.caption{color:#555}"""


def _embed(png_path: str) -> str:
    """The PNG as an inline <img> (a data URI, so the report is one file), or a note if it is missing."""
    try:
        with open(png_path, "rb") as handle:
            data = base64.b64encode(handle.read()).decode("ascii")
    except OSError:
        return f"<p><em>figure missing: {html.escape(os.path.basename(str(png_path)))}</em></p>"
    return f'<img src="data:image/png;base64,{data}" alt="">'


def html_report(path: str, title: str, sections: list[tuple[str, str, str]], tables: list[tuple[str, str]] = ()) -> str:
    """Write one self-contained HTML report: a title, the given tables, then each figure inline with its caption.

    Headings, captions and the title are escaped; table html is inserted as given.
    """
    parts = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for heading, table_html in tables:
        parts += [f"<h2>{html.escape(heading)}</h2>", table_html]
    for heading, png_path, caption in sections:
        parts += [f"<h2>{html.escape(heading)}</h2>", _embed(png_path),
                  f'<p class="caption">{html.escape(caption)}</p>']
    parts.append("</body></html>")
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(parts) + "\n")
    return os.fspath(path)


def schedule_steps(lineage: list[dict], keys: list[str], max_steps: int, path: str) -> str:
    """Each mutated value against the training step, as the winner's weights were trained with it."""
    fig, axes = plt.subplots(len(keys), 1, figsize=(7, 1.8 * max(1, len(keys)) + 0.6), sharex=True, squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        starts = [segment["from_step"] for segment in lineage] + [max_steps + 1]
        values = [segment["params"].get(key) for segment in lineage]
        ax.step(starts, values + values[-1:], where="post", color="tab:blue")
        for start, segment in zip(starts[1:-1], lineage[1:]):
            ax.axvline(start, color="tab:gray", linestyle=":", linewidth=0.8)
            ax.annotate(f"from {segment['trial']}" if segment["trial"] != lineage[0]["trial"] else "",
                        (start, values[lineage.index(segment)]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        if all(isinstance(v, (int, float)) and v > 0 for v in values) and max(values) / min(values) > LOG_SPAN:
            ax.set_yscale("log")
        ax.set_ylabel(key, fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("training step")
    fig.suptitle("The winner's schedule (values its weights were trained with)", fontsize=10)
    return _save(fig, path)
