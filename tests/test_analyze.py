"""analyze.py on the quickstart sweep: leaderboard, best config that trains, baseline deltas, plots, report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from hypir_core.config import load_config
from ray_results import load_results

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def run(script, *args, cwd):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def analysed(quickstart_sweep, tmp_path_factory):
    """A baseline single run, then analyze.py with no sweep argument (the newest) and that baseline."""
    sweep_dir, launched = quickstart_sweep
    assert launched.returncode == 0, launched.stderr[-2000:]
    work = tmp_path_factory.mktemp("analysis")
    baseline = work / "baseline"
    trained = run("launch.py", "--single", ROOT / "configs" / "tiny.yaml", f"output_dir={baseline}",
                  "max_train_steps=20", "validation_steps=10", "report_to=none", "log_image_steps=0",
                  "log_grad_steps=0", "data_config.val.num_samples_per_type=4", "--no-progress", cwd=work)
    assert trained.returncode == 0, trained.stderr[-2000:]
    out = work / "out"
    result = run("analyze.py", "--baseline", baseline, "--out", out, cwd=sweep_dir.parent.parent)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return sweep_dir, baseline, out, result.stdout


def test_leaderboard_matches_ray(analysed):
    sweep_dir, _, out, stdout = analysed
    board = pd.read_csv(out / "leaderboard.csv")
    results = load_results(sweep_dir)
    assert len(board) == len(results) == 8 and f"'{sweep_dir.name}'" in stdout
    assert (board["status"] == "errored").sum() == results.num_errors
    rounds = {Path(r.path).name.removeprefix("trial_"): len(r.metrics_dataframe) for r in results}
    assert dict(zip(board["trial"], board["rounds"])) == rounds
    assert set(board["status"]) <= {"completed", "early-stopped"} and "early-stopped" in set(board["status"])
    # Full-budget trials rank ahead of early-stopped ones, each group by best score; the rule is printed.
    order = list(board["status"])
    assert order == sorted(order, key=lambda s: s != "completed")
    for status in ("completed", "early-stopped"):
        scores = board[board["status"] == status]["best val/Final_Score"].tolist()
        assert scores == sorted(scores, reverse=True)
    assert "Ranking: trials that ran the full budget first" in stdout
    assert {"lambda_l2", "lambda_l1", "lambda_gan", "lr_G", "Blur PSNR", "Snow PSNR"} <= set(board.columns)


def test_the_study_and_the_leaderboard_agree(analysed):
    """Full-budget trials are COMPLETE with the best round the leaderboard ranks by; stopped ones PRUNED."""
    import optuna

    sweep_dir, _, out, _ = analysed
    board = pd.read_csv(out / "leaderboard.csv", dtype={"trial": str})
    study = optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    told = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert set(told) == set(board["trial"])
    for _, row in board.iterrows():
        trial = told[row["trial"]]
        if row["status"] == "completed":
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == pytest.approx(row["best val/Final_Score"], abs=1e-9)
        else:
            assert trial.state == optuna.trial.TrialState.PRUNED and len(trial.intermediate_values) == row["rounds"]


def test_best_config_loads_and_trains(analysed, tmp_path):
    _, _, out, _ = analysed
    board = pd.read_csv(out / "leaderboard.csv")
    winner = board.iloc[0]
    path = out / "best_config.yaml"
    header = path.read_text().splitlines()[:3]
    assert winner["trial"] in header[1] and f"{winner['best val/Final_Score']:.4f}" in header[1]
    assert "HYPIR_sd2_best.pth" in header[2]
    cfg = load_config(path)
    for key in ("lambda_l2", "lambda_l1", "lambda_gan", "lr_G"):
        assert getattr(cfg, key) == pytest.approx(winner[key], rel=1e-9)
    trained = run("launch.py", "--single", path, f"output_dir={tmp_path / 'run'}", "max_train_steps=10",
                  "validation_steps=10", "report_to=none", "--no-progress", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["status"] == "completed"


def test_baseline_deltas_equal_the_runs_numbers(analysed):
    sweep_dir, baseline, out, _ = analysed
    comparison = pd.read_csv(out / "baseline_comparison.csv").set_index("metric")
    base = json.loads((baseline / "summary.json").read_text())["best_round"]["metrics"]
    winner = pd.read_csv(out / "leaderboard.csv").iloc[0]["trial"]
    trial_rounds = json.loads((sweep_dir / f"trial_{winner}" / "summary.json").read_text())["rounds"]
    best = max(trial_rounds, key=lambda r: r["metrics"]["val/Final_Score"])["metrics"]
    delta = next(c for c in comparison.columns if c.startswith("delta vs"))
    for name in ("Final_Score", "PSNR", "Rain/SSIM", "Haze/LPIPS"):
        assert comparison.loc[name, delta] == pytest.approx(best[f"val/{name}"] - base[f"val/{name}"], abs=1e-9)


def test_plots_and_report(analysed):
    _, _, out, _ = analysed
    pngs = sorted((out / "plots").glob("*.png"))
    # The audit's figure is drawn when enough trials ran the full budget (how many did is ASHA's arrival order).
    audited = not pd.read_csv(out / "early_stopping_audit.csv").empty
    assert {p.stem for p in pngs} == {"score_curves", "importance", "psnr_vs_lpips", "per_type_psnr",
                                      "parallel_coordinates"} | ({"early_stopping_audit"} if audited else set())
    for png in pngs:
        pixels = np.asarray(Image.open(png).convert("L"), dtype=float)
        assert pixels.shape[0] > 200 and pixels.std() > 5, png.name
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 + audited and "Leaderboard" in html
    assert "CPU trial-hours spent; early stopping saved" in html


def test_analyze_without_a_sweep_is_one_sentence(tmp_path):
    result = run("analyze.py", cwd=tmp_path)
    assert result.returncode == 2 and "No sweep found under sweep_results/" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_winner_under_both_colour_fix_settings_and_its_handoff(analysed):
    """Both settings for the winner and the baseline at their final rounds; commands that fit the weights."""
    _, baseline, out, stdout = analysed
    comparison = pd.read_csv(out / "color_fix_comparison.csv")
    winner = pd.read_csv(out / "leaderboard.csv", dtype={"trial": str}).iloc[0]
    mine = comparison[comparison["run"] == f"trial {winner['trial']}"].set_index("colour fix")
    assert list(mine.index) == ["none", "wavelet"] and {"Lowlight PSNR", "Haze Final_Score"} <= set(comparison.columns)
    last = json.loads((Path(winner_path(out, winner)) / "summary.json").read_text())["rounds"][-1]["metrics"]
    assert mine.loc["wavelet", "Final_Score"] == pytest.approx(last["val/color_fix/wavelet/Final_Score"], abs=1e-9)
    assert mine.loc["none", "Lowlight PSNR"] == pytest.approx(last["val/Lowlight/PSNR"], abs=1e-9)
    assert set(comparison[comparison["run"] == baseline.name]["colour fix"]) == {"none", "wavelet"}
    assert ("is first both without the colour fix" in stdout
            or "The winner would change with the wavelet colour fix" in stdout)
    handoff = (out / "HANDOFF.md").read_text()
    config = load_config(out / "best_config.yaml")
    for flag in (f"--lora_rank {config.lora_rank}", f"--model_t {config.model_t}", f"--coeff_t {config.coeff_t}",
                 "--lora_modules " + ",".join(config.lora_modules), "python launch.py --restore"):
        assert flag in handoff
    assert "Lowlight" in handoff and "dB" in handoff  # the colour fix's measured effect, per type
    gradio = yaml.safe_load((out / "sd2_gradio.yaml").read_text())
    assert gradio["lora_rank"] == config.lora_rank and Path(gradio["weight_path"]).name == "HYPIR_sd2_best.pth"
    assert "schedule" not in yaml.safe_load((out / "fork_config.yaml").read_text())
    assert "fork_config.yaml, which drops or changes" in stdout and "ema_warmup: True dropped" in stdout


def winner_path(out, winner) -> str:
    header = (out / "best_config.yaml").read_text().splitlines()[2]
    return str(Path(header.split("weights of that trial: ")[1]).parent)
