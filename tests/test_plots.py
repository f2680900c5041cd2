"""Sweep figures and the HTML report: every figure is a real picture, thin data never crashes, the report is one file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from hypir_sweep import plots


def assert_picture(path) -> None:
    """A PNG that opens, has a real size and is not one flat colour."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 200 and image.height > 100
        assert np.asarray(image.convert("RGB"), dtype=float).std() > 0


def points(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["trial", "psnr", "lpips", "status"])


CURVES = {"t0": [(1, 0.2), (2, 0.35), (3, 0.5)], "t1": [(1, 0.3), (2, 0.32)], "t2": [(1, 0.1)],
          "t3": [(1, math.nan), (2, 0.25)]}
STATUS = {"t0": "completed", "t1": "early-stopped", "t2": "diverged", "t3": "running"}


@pytest.mark.parametrize("curves", [CURVES, {"only": [(1, 0.4)]}, {}, {"nan": [(1, math.nan)]}],
                         ids=["several", "one-round", "empty", "all-nan"])
def test_score_curves(tmp_path, curves):
    path = tmp_path / "curves.png"
    assert plots.score_curves(curves, STATUS, "val/Final_Score", str(path)) == str(path)
    assert_picture(path)


@pytest.mark.parametrize("importances", [{"lambda_gan": 0.7, "lr": 0.25, "weight_decay": 0.05}, {}, {"lr": math.nan}])
def test_param_importance(tmp_path, importances):
    assert_picture(plots.param_importance(importances, str(tmp_path / "imp.png")))


def test_pareto_front_keeps_ties_and_drops_dominated_and_nan():
    frame = points([
        ("sharp", 30.0, 0.30, "completed"),      # best PSNR
        ("soft", 27.0, 0.10, "completed"),       # best LPIPS
        ("tie_a", 28.5, 0.20, "completed"),      # identical pair: neither dominates the other
        ("tie_b", 28.5, 0.20, "early-stopped"),
        ("worse", 28.0, 0.25, "completed"),      # dominated by both ties
        ("same_lpips", 29.0, 0.30, "completed"),  # equal LPIPS, lower PSNR than "sharp": dominated
        ("broken", math.nan, 0.01, "errored"),   # would dominate on LPIPS, but has no PSNR
    ])
    assert plots.pareto_front(frame) == ["soft", "tie_a", "tie_b", "sharp"]
    assert plots.pareto_front(points([])) == []


@pytest.mark.parametrize("rows", [
    [("a", 30.0, 0.3, "completed"), ("b", 28.0, 0.1, "completed"), ("c", 27.0, 0.4, "early-stopped"),
     ("d", math.nan, 0.2, "errored")],
    [("one", 25.0, 0.2, "completed")],
    [("nan", math.nan, math.nan, "errored")],
], ids=["several", "one-trial", "nothing-valid"])
def test_psnr_vs_lpips(tmp_path, rows):
    assert_picture(plots.psnr_vs_lpips(points(rows), str(tmp_path / "scatter.png")))


@pytest.mark.parametrize("table", [
    pd.DataFrame({"Blur": [25.1, 24.3], "Haze": [22.0, 23.5], "Rain": [math.nan, 20.0], "Snow": [21.0, 21.0]},
                 index=["t1", "t0"]),
    pd.DataFrame({"Blur": [25.1]}, index=["t0"]),
    pd.DataFrame(),
], ids=["several", "one-cell", "empty"])
def test_type_heatmap(tmp_path, table):
    assert_picture(plots.type_heatmap(table, str(tmp_path / "heat.png")))


def test_parallel_coordinates_mixed_axes(tmp_path):
    frame = pd.DataFrame({
        "lr": [1e-6, 1e-5, 1e-4, 3e-5],               # > 20x span: log axis
        "lambda_gan": [0.1, 0.5, 0.3, math.nan],        # linear axis with a gap
        "optimizer": ["adamw", "adam", "adamw", "sgd"],  # categorical
        "rank": [8, 8, 8, 8],                            # constant
        "score": [0.4, 0.6, math.nan, 0.5],
    })
    path = plots.parallel_coordinates(frame, ["lr", "lambda_gan", "optimizer", "rank"], "score",
                                      str(tmp_path / "par.png"))
    assert_picture(path)
    positions, ticks = plots._axis_positions(frame["optimizer"])
    assert [label for _, label in ticks] == ["adam", "adamw", "sgd"] and list(positions) == [0.5, 0.0, 0.5, 1.0]
    positions, ticks = plots._axis_positions(frame["lr"])
    assert positions[0] == 0.0 and positions[2] == 1.0 and positions[1] == pytest.approx(0.5)  # log (linear: 0.09)


@pytest.mark.parametrize("frame,params", [
    (pd.DataFrame({"lr": [1e-4], "score": [0.5]}), ["lr"]),
    (pd.DataFrame({"score": [0.5, 0.7]}), []),
    (pd.DataFrame(columns=["lr", "score"]), ["lr"]),
], ids=["one-trial", "no-params", "empty"])
def test_parallel_coordinates_thin_data(tmp_path, frame, params):
    assert_picture(plots.parallel_coordinates(frame, params, "score", str(tmp_path / "par.png")))


def test_html_report_is_one_self_contained_file(tmp_path):
    figure_a = plots.param_importance({"lr": 1.0}, str(tmp_path / "a.png"))
    figure_b = plots.score_curves(CURVES, STATUS, "score", str(tmp_path / "b.png"))
    table = "<table><tr><th>trial</th><td>t0</td></tr></table>"
    out = plots.html_report(str(tmp_path / "report.html"), "Sweep <demo>",
                            [("<script>alert(1)</script>", figure_a, "a & b"), ("Curves", figure_b, "per round")],
                            tables=[("Leaderboard", table)])
    text = Path(out).read_text(encoding="utf-8")
    assert text.count("data:image/png;base64,") == 2
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert table in text and "a &amp; b" in text and "<h1>Sweep &lt;demo&gt;</h1>" in text
    assert text.index("Leaderboard") < text.index("Curves")
