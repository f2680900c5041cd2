"""A sweep over one degradation setting, end to end: sweeps/quickstart_realesrgan.yaml on the HQ-only tiny config
through launch.py, with real Ray Tune, Optuna and ASHA (about half a minute on 2 cores)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from ray_results import load_results

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "sweeps" / "quickstart_realesrgan.yaml"
KEY = "data_config.train.batch_transform.params.noise_range.1"
pytestmark = pytest.mark.slow


def test_a_sweep_over_the_upper_end_of_the_noise_range(tmp_path):
    spec = yaml.safe_load(SPEC.read_text())
    spec.update(base_config=str((SPEC.parent / spec["base_config"]).resolve()), tracking={"report_to": "none"})
    path = tmp_path / SPEC.name
    path.write_text(yaml.safe_dump(spec))
    run = subprocess.run([sys.executable, str(ROOT / "launch.py"), str(path), "--no-progress"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Best trial " in run.stdout and "HYPIR_sd2_best.pth" in run.stdout
    sweep_dir = tmp_path / "sweep_results" / spec["name"]
    max_rounds = spec["overrides"]["max_train_steps"] // spec["overrides"]["validation_steps"]

    # What any order of trials and stops guarantees: every trial reported, none failed, one ran the full budget.
    results = load_results(sweep_dir)
    assert len(results) == spec["search"]["num_samples"] and results.num_errors == 0
    rounds = [len(r.metrics_dataframe) for r in results]
    assert min(rounds) >= 1 and max(rounds) == max_rounds

    # Each trial trained with the value Optuna drew, inside the space, as the upper end of its noise range;
    # every other degradation setting and the validation set are the base config's, the same for all trials.
    base = yaml.safe_load((sweep_dir / "sweep_spec.yaml").read_text())["base_resolved"]["data_config"]
    study = optuna.load_study(study_name=spec["name"], storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    drawn = sorted(t.params[KEY] for t in study.trials)
    assert len(set(drawn)) == len(drawn) and all(5 <= v <= 40 for v in drawn)
    trained = []
    for summary_path in sorted(sweep_dir.glob("trial_*/summary.json")):
        summary = json.loads(summary_path.read_text())
        data = summary["config"]["data_config"]
        transform = data["train"]["batch_transform"]["params"]
        low, high = transform.pop("noise_range")
        base_transform = dict(base["train"]["batch_transform"]["params"])
        assert low == base_transform.pop("noise_range")[0] and transform == base_transform
        assert data["val"] == base["val"] and data["val"]["degradation"]["stage2_scale"] == 2
        assert len(summary["rounds"]) >= 1 and all("val/RealESRGAN/PSNR" in r["metrics"] for r in summary["rounds"])
        trained.append(high)
    assert sorted(trained) == drawn
