"""Finalists confirmed over seeds end to end on the tiny model: a finished sweep given --confirm, its driver
killed in the confirmation phase, then --resume; then analyze.py's ranking by mean and its export.

Real Ray Tune, Optuna storage and training. Whichever confirmation trial runs first and wherever the kill
lands, the sweep must end with each finalist's new seed trained exactly once to the full budget, both
studies agreeing with the trial folders, and the search's study holding the search alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from ray.tune import ExperimentAnalysis

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
L2_VALUES = (0.5, 2.0, 3.5)


def write_spec(tmp_path: Path, **extra) -> Path:
    spec = {"name": "trust", "base_config": str(ROOT / "configs" / "tiny.yaml"),
            "overrides": {"max_train_steps": 20, "validation_steps": 10, "log_image_steps": 0, "log_grad_steps": 0,
                          "data_config.val.num_samples_per_type": 2},
            "space": {"lambda_l2": {"type": "uniform", "low": 0.5, "high": 4.0}},
            "search": {"num_samples": 3, "max_concurrent_trials": 2,
                       "points_to_evaluate": [{"lambda_l2": v} for v in L2_VALUES]},
            "scheduler": {"type": "fifo"}, "resources": {"gpu": 0, "cpu": 1}, "tracking": {"report_to": "none"},
            **extra}
    path = tmp_path / "trust.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def launch(spec: Path, cwd: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPIR_SWEEP_FAULT")}
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), str(spec), "--no-progress", *extra], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def summaries(sweep_dir: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(sweep_dir.glob("trial_*/summary.json")):
        try:
            found[path.parent.name.removeprefix("trial_")] = json.loads(path.read_text())
        except ValueError:  # being replaced right now
            continue
    return found


def confirming(summary: dict) -> bool:
    return "seed" in summary.get("config", {}).get("sweep", {}).get("params", {})


def test_confirm_a_finished_sweep_killed_in_its_confirmation_phase_then_resumed(tmp_path):
    spec = write_spec(tmp_path)
    searched = launch(spec, tmp_path)
    output = searched.communicate(timeout=600)[0]
    assert searched.returncode == 0, output[-3000:]
    sweep_dir = tmp_path / "sweep_results" / "trust"
    search = {t: s for t, s in summaries(sweep_dir).items()}
    best = {t: max(r["metrics"]["val/Final_Score"] for r in s["rounds"]) for t, s in search.items()}
    finalists = sorted(best, key=best.get, reverse=True)[:2]

    # --confirm with the spec's settings; killed once a confirmation trial has scored its first round.
    spec = write_spec(tmp_path, confirm={"top": 2, "seeds": 1})
    confirm = launch(spec, tmp_path, "--confirm")
    deadline = time.time() + 300
    while not any(confirming(s) and s.get("rounds") for s in summaries(sweep_dir).values()):
        assert confirm.poll() is None, "the confirmation ended before it could be killed:\n" + confirm.stdout.read()
        assert time.time() < deadline, "no confirmation trial scored a round"
        time.sleep(0.05)
    confirm.send_signal(signal.SIGKILL)
    confirm.communicate(timeout=60)
    resumed = launch(spec, tmp_path, "--resume")
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output[-3000:]
    assert "Finalists over seeds" in output

    trials = ExperimentAnalysis(str(sweep_dir)).trials
    assert len(trials) == 5 and {t.status for t in trials} == {"TERMINATED"}
    after = summaries(sweep_dir)
    confirmations = {t: s for t, s in after.items() if confirming(s)}
    params = {t: s["config"]["sweep"]["params"] for t, s in after.items()}
    # Each finalist's new seed (the base config's 231 + 1) once, nothing else, each to the full budget.
    assert sorted((params[t]["lambda_l2"], params[t]["seed"]) for t in confirmations) == sorted(
        (params[f]["lambda_l2"], 232) for f in finalists)
    for trial_id, summary in confirmations.items():
        assert summary["status"] == "completed", (trial_id, summary["status"])
        assert [r["metrics"]["step"] for r in summary["rounds"]] == [10, 20]
        assert summary["config"]["seed"] == 232
    # The search's trials were not trained again.
    assert all(after[t]["rounds"] == search[t]["rounds"] for t in search)

    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    searched_study = optuna.load_study(study_name="trust", storage=storage)
    assert sorted(t.user_attrs["ray_trial_id"] for t in searched_study.trials) == sorted(search)
    confirm_study = optuna.load_study(study_name="trust-confirm", storage=storage)
    assert not [t for t in confirm_study.trials if t.state == optuna.trial.TrialState.RUNNING]
    newest = {}
    for record in confirm_study.trials:
        newest[record.user_attrs["ray_trial_id"]] = record
    for trial_id, summary in confirmations.items():
        record = newest[trial_id]
        assert record.state == optuna.trial.TrialState.COMPLETE
        assert record.value == pytest.approx(max(r["metrics"]["val/Final_Score"] for r in summary["rounds"]))
        assert params[record.user_attrs["confirms"]]["lambda_l2"] == params[trial_id]["lambda_l2"]

    # analyze.py ranks the finalists by their mean over both seeds and exports the best by mean.
    analysed = subprocess.run([sys.executable, str(ROOT / "analyze.py"), str(sweep_dir)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
    assert analysed.returncode == 0, analysed.stdout[-3000:] + analysed.stderr[-3000:]
    means = {}
    for finalist in finalists:
        again = next(t for t in confirmations if params[t]["lambda_l2"] == params[finalist]["lambda_l2"])
        means[finalist] = (best[finalist] + max(r["metrics"]["val/Final_Score"]
                                                for r in confirmations[again]["rounds"])) / 2
    table = pd.read_csv(sweep_dir / "analysis" / "finalists.csv", dtype={"trial": str})
    assert list(table["trial"]) == sorted(means, key=means.get, reverse=True)
    assert list(table["seeds"]) == [2, 2]
    assert table["mean val/Final_Score"].tolist() == pytest.approx(sorted(means.values(), reverse=True))
    exported = (sweep_dir / "analysis" / "best_config.yaml").read_text()
    assert exported.splitlines()[1].startswith(f"# trial {table['trial'][0]} ")
    assert "best mean val/Final_Score over 2 seeds" in exported.splitlines()[0]
    assert "fewer than the 4 a rank correlation needs" in analysed.stdout  # the audit: 3 full-budget trials
    assert (sweep_dir / "analysis" / "plots" / "finalists.png").is_file()
