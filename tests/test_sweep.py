"""Sweeps end to end on the tiny model: real Ray Tune, Optuna storage, ASHA and SwanLab (offline)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from ray_results import load_results
from swanlab_records import read_offline_metrics, read_offline_run_info

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def launch(args, cwd, timeout=600):
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args, "--no-progress"], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def summaries(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep_dir.glob("trial_*/summary.json"))}


def small_spec(tmp_path, name, num_samples, **extra) -> Path:
    spec = {"name": name, "base_config": str(ROOT / "configs" / "tiny.yaml"),
            "overrides": {"max_train_steps": 20, "validation_steps": 10, "log_image_steps": 0, "log_grad_steps": 0,
                          "data_config.val.num_samples_per_type": 2},
            "space": {"lambda_l2": {"type": "uniform", "low": 0.5, "high": 4.0}},
            "search": {"num_samples": num_samples, "max_concurrent_trials": 2},
            "scheduler": {"type": "fifo"}, "resources": {"gpu": 0, "cpu": 1},
            "tracking": {"report_to": "none"}}
    spec.update(extra)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_quickstart_sweep(quickstart_sweep):
    sweep_dir, run = quickstart_sweep
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Best trial " in run.stdout and "HYPIR_sd2_best.pth" in run.stdout
    spec = yaml.safe_load((ROOT / "sweeps" / "quickstart.yaml").read_text())
    max_rounds = spec["overrides"]["max_train_steps"] // spec["overrides"]["validation_steps"]

    # Every trial reported to Tune, read back through Ray's own API.
    results = load_results(sweep_dir)
    assert len(results) == spec["search"]["num_samples"] == 8
    assert results.num_errors == 0
    rounds = {os.path.basename(r.path): len(r.metrics_dataframe) for r in results}
    assert all(n >= 1 for n in rounds.values())
    assert any(n < max_rounds for n in rounds.values()), f"ASHA stopped no trial early: {rounds}"
    assert any(n == max_rounds for n in rounds.values())

    # The warm-start point (tiny.yaml's own values) was the first suggestion and ran in the first wave.
    warm = {"lambda_l2": 2.0, "lambda_l1": 2.0, "lambda_gan": 0.3, "lr_G": 0.001}
    study = optuna.load_study(study_name="quickstart", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert study.trials[0].params == warm
    starts = sorted((r.metrics_dataframe["timestamp"].iloc[0] - r.metrics_dataframe["time_total_s"].iloc[0],
                     r.config == warm) for r in results)
    assert any(is_warm for _, is_warm in starts[:spec["search"]["max_concurrent_trials"]])

    # Each trial: its own SwanLab run in the sweep's swanlog folder, holding val/Final_Score for every round it
    # reported (SwanLab's local mode here: no API key, the dashboard installed).
    status = summaries(sweep_dir)
    assert len(status) == 8
    runs = {read_offline_run_info(d)["name"]: d for d in (sweep_dir / "swanlog").glob("run-*")}
    assert sorted(runs) == sorted(f"quickstart-{trial[len('trial_'):]}" for trial in status)
    for trial, summary in status.items():
        run_dir = runs[f"quickstart-{trial[len('trial_'):]}"]
        scores = read_offline_metrics(run_dir)["val/Final_Score"]
        assert [round(v, 6) for _, v in scores] == [round(r["metrics"]["val/Final_Score"], 6)
                                                    for r in summary["rounds"]]
        assert len(scores) == rounds[trial]
        info = read_offline_run_info(run_dir)
        assert info["group"] == "quickstart"
        assert info["state"] == "success"
        assert summary["status"] == "completed" if rounds[trial] == max_rounds else \
            summary["status"].startswith("stopped early at step")

    # The Optuna study is a real database that optuna.load_study opens.
    assert len(study.trials) == 8

    # HYPIR weights kept for the top-k trials only.
    kept = sorted(p.parent.name for p in sweep_dir.glob("trial_*/HYPIR_sd2_best.pth"))
    assert len(kept) == spec["keep_top_k"]
    best = max(status, key=lambda t: max(r["metrics"]["val/Final_Score"] for r in status[t]["rounds"]))
    assert best in kept
    assert not list(sweep_dir.glob("trial_*/checkpoints"))  # the trainer's copies are gone


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sweep_joins_a_running_ray_cluster(tmp_path):
    port = _free_port()
    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run([ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                              "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false"],
                             env=env, capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stderr
    try:
        spec = small_spec(tmp_path, "on_cluster", num_samples=2,
                          overrides={"max_train_steps": 10, "validation_steps": 10, "log_image_steps": 0,
                                     "log_grad_steps": 0, "data_config.val.num_samples_per_type": 2})
        run = launch([str(spec), "--address", f"127.0.0.1:{port}"], tmp_path)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert len(summaries(tmp_path / "sweep_results" / "on_cluster")) == 2
        # The trials ran on the cluster we started, not on a new local one.
        status = subprocess.run([ray_bin, "list", "actors", "--address", f"127.0.0.1:{port}", "--detail",
                                 "--format", "json", "--limit", "100"], env=env, capture_output=True, text=True,
                                timeout=120)
        if status.returncode == 0:
            assert "run_trial" in status.stdout
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
