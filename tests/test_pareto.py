"""Pareto sweeps on the tiny model: a multi-objective study, its front, and any point of it exported and trained."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pandas as pd
import pytest
import yaml
from test_reliability import ROOT, finish, start, summaries, write_spec

from hypir_sweep.analysis import load_sweep
from hypir_sweep.pareto import dominates, front

pytestmark = pytest.mark.slow
OBJECTIVES = [("val/PSNR", "max"), ("val/LPIPS", "min")]


def run(script, *args, cwd):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args), *(["--no-progress"] if
                          script == "launch.py" else [])], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def pareto_sweep(tmp_path_factory):
    work = tmp_path_factory.mktemp("pareto")
    spec = write_spec(work, "front", {"type": "fifo"}, num_samples=4, steps=20)
    raw = yaml.safe_load(spec.read_text())
    raw["objectives"] = [{"metric": m, "mode": d} for m, d in OBJECTIVES]
    raw["space"]["lr_G"] = {"type": "loguniform", "low": 1.0e-4, "high": 3.0e-3}
    raw["search"]["points_to_evaluate"] = [{"lambda_l2": 0.5, "lr_G": 3.0e-3}, {"lambda_l2": 3.5, "lr_G": 1.0e-4}]
    spec.write_text(yaml.safe_dump(raw))
    code, output = finish(start(spec, work))
    assert code == 0, output[-3000:]
    baseline = work / "baseline"
    trained = run("launch.py", "--single", ROOT / "configs" / "tiny.yaml", f"output_dir={baseline}", "max_train_steps=20",
                  "validation_steps=10", "report_to=none", "log_image_steps=0", "log_grad_steps=0",
                  "data_config.val.num_samples_per_type=2", cwd=work)
    assert trained.returncode == 0, trained.stderr[-2000:]
    return work, work / "sweep_results" / "front", baseline


def test_the_study_is_multi_objective_and_its_front_is_analyze_pys(pareto_sweep):
    _, sweep_dir, _ = pareto_sweep
    study = optuna.load_study(study_name="front", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    sweep = load_sweep(str(sweep_dir))
    found = front(sweep)
    assert {t.user_attrs["ray_trial_id"] for t in study.best_trials} == {r.trial for r in found}
    # Non-dominated among themselves, and every other full-budget trial is dominated by one of them.
    for a in found:
        assert not any(dominates(b, a, OBJECTIVES) for b in found)
    completed = [r for r in sweep.rows if r.status == "completed"]
    assert len(completed) == 4
    for row in completed:
        assert row in found or any(dominates(f, row, OBJECTIVES) for f in found)


def test_a_picked_point_is_exported_and_trains(pareto_sweep):
    work, sweep_dir, baseline = pareto_sweep
    sweep = load_sweep(str(sweep_dir))
    lpips = sorted(r.final_metrics["val/LPIPS"] for r in sweep.rows)
    limit = lpips[len(lpips) // 2]
    out = work / "picked"
    analysed = run("analyze.py", sweep_dir, "--pick", f"val/LPIPS<={limit}", "--maximize", "val/PSNR",
                   "--baseline", baseline, "--out", out, cwd=work)
    assert analysed.returncode == 0, analysed.stdout[-2000:] + analysed.stderr[-2000:]
    admitted = [r for r in sweep.rows if r.final_metrics["val/LPIPS"] <= limit]
    expected = max(admitted, key=lambda r: r.final_metrics["val/PSNR"])
    exported = yaml.safe_load((out / "best_config.yaml").read_text())
    assert exported["lambda_l2"] == expected.params["lambda_l2"] and exported["lr_G"] == expected.params["lr_G"]
    assert f"Picked: trial {expected.trial}" in analysed.stdout
    assert "Hypervolume of the front beyond baseline baseline" in analysed.stdout
    html = (out / "report.html").read_text()
    assert html.count("<h2>") >= 7 and "Pareto front" in html and "Blur: picked point" in html
    assert (out / "plots" / "pareto_front.png").stat().st_size > 0
    assert len(list((out / "plots").glob("compare_*.png"))) == 5
    assert pd.read_csv(out / "baseline_comparison.csv")["metric"].tolist()[:3] == ["Final_Score", "PSNR", "SSIM"]

    trained = run("launch.py", "--single", out / "best_config.yaml", f"output_dir={work / 'retrained'}",
                  "max_train_steps=10", "validation_steps=10", "report_to=none", cwd=work)
    assert trained.returncode == 0, trained.stderr[-2000:]

    knee = run("analyze.py", sweep_dir, "--pick", "knee", "--out", work / "knee", cwd=work)
    assert knee.returncode == 0 and "the knee of the front" in knee.stdout
    bad = run("analyze.py", sweep_dir, "--pick", "val/LPIPS<=-1", "--maximize", "val/PSNR", cwd=work)
    assert bad.returncode == 2 and "loosen the condition" in bad.stderr
    assert all(s["status"] == "completed" for s in summaries(sweep_dir).values())
