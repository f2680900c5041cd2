"""Figures of a Pareto sweep: the front in objective space, and the same validation crops side by side.

People choose a point of a perception-distortion trade-off by looking, so the report shows, for the
picked point, a few front points and the baselines, each degradation type's validation crops as
LQ | each config | GT, from the images the runs saved at their final round (``val_images/<type>.png``:
rows of LQ | restored | GT crops).
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from hypir_sweep.plots import _note, _save, plt


def objective_front(points: list[dict], objectives: list[tuple[str, str]], path: str,
                    baselines: list[dict] = (), picked: str | None = None) -> str:
    """Scatter of the first two objectives: dominated trials faded, the front joined, baselines as black
    crosses, the picked trial ringed; a third objective (if any) colours the points.

    ``points``: dicts with "trial", "on_front" and the objective metrics; ``baselines``: dicts with "name"
    and the objective metrics.
    """
    fig, ax = plt.subplots(figsize=(7, 5))
    (x_metric, x_mode), (y_metric, y_mode) = objectives[0], objectives[1]
    if not points:
        _note(ax, "no trial has run the full budget yet")
    else:
        third = objectives[2][0] if len(objectives) > 2 else None
        front = sorted((p for p in points if p["on_front"]), key=lambda p: p[x_metric])
        dominated = [p for p in points if not p["on_front"]]
        ax.scatter([p[x_metric] for p in dominated], [p[y_metric] for p in dominated], s=28, alpha=0.3,
                   color="tab:gray", label="dominated")
        shown = ax.scatter([p[x_metric] for p in front], [p[y_metric] for p in front], s=60, marker="*",
                           c=[p[third] for p in front] if third else "tab:red", zorder=4, label="Pareto front")
        ax.plot([p[x_metric] for p in front], [p[y_metric] for p in front], color="tab:red", linewidth=1, zorder=3)
        if third:
            fig.colorbar(shown, ax=ax, label=third)
        for p in front:
            ax.annotate(p["trial"], (p[x_metric], p[y_metric]), xytext=(5, 5), textcoords="offset points", fontsize=8)
        chosen = [p for p in points if p["trial"] == picked]
        if chosen:
            ax.scatter([chosen[0][x_metric]], [chosen[0][y_metric]], s=260, facecolors="none", edgecolors="tab:green",
                       linewidths=2, zorder=5, label=f"picked ({picked})")
    for base in baselines:
        if x_metric in base and y_metric in base:
            ax.scatter([base[x_metric]], [base[y_metric]], marker="X", s=90, color="black", zorder=5)
            ax.annotate(base["name"], (base[x_metric], base[y_metric]), xytext=(5, -12), textcoords="offset points",
                        fontsize=8)
    ax.set_xlabel(f"{x_metric} ({'higher' if x_mode == 'max' else 'lower'} is better)")
    ax.set_ylabel(f"{y_metric} ({'higher' if y_mode == 'max' else 'lower'} is better)")
    ax.set_title("Trade-off between the objectives (each full-budget trial at its last round)")
    ax.grid(alpha=0.3)
    if points:
        ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def side_by_side(runs: list[tuple[str, str]], degradation_type: str, path: str) -> str | None:
    """LQ | one column per run | GT for one degradation type, from each run's ``val_images/<type>.png``.

    ``runs``: (label, folder holding val_images/). Runs without that type's image are left out; None
    when no run has it.
    """
    panels, labels, lq, gt = [], [], None, None
    for label, folder in runs:
        image_path = os.path.join(folder, "val_images", f"{degradation_type}.png")
        if not os.path.exists(image_path):
            continue
        grid = np.asarray(Image.open(image_path).convert("RGB"))
        third = grid.shape[1] // 3
        if lq is None:
            lq, gt = grid[:, :third], grid[:, 2 * third:3 * third]
        if grid.shape[0] != lq.shape[0] or third != lq.shape[1]:
            continue  # another crop layout (a run of another validation set): not comparable
        panels.append(grid[:, third:2 * third])
        labels.append(label)
    if lq is None:
        return None
    columns = [lq, *panels, gt]
    names = ["LQ", *labels, "GT"]
    fig, axes = plt.subplots(1, len(columns), figsize=(1.9 * len(columns), 1.9 * lq.shape[0] / lq.shape[1] + 0.5))
    for ax, image, name in zip(np.atleast_1d(axes), columns, names):
        ax.imshow(image)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{degradation_type}: validation crops at the final round", fontsize=10)
    return _save(fig, path)
