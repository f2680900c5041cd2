"""launch.py as a user runs it: clear errors, a dry run that checks everything and trains nothing."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import ROOT

TINY = str(ROOT / "configs" / "tiny.yaml")


def launch(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **env}, timeout=600)


def test_missing_config_is_one_line_error():
    result = launch("--single", "configs/nope.yaml")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: Config file 'configs/nope.yaml' does not exist")
    assert "Traceback" not in result.stderr


def test_bad_override_names_key_and_suggests(tmp_path):
    result = launch("--single", TINY, "lamda_l2=2", f"output_dir={tmp_path}")
    assert result.returncode == 2
    assert "lamda_l2" in result.stderr and "did you mean 'lambda_l2'" in result.stderr


def test_dry_run_checks_everything_and_trains_nothing(tmp_path):
    out = tmp_path / "run"
    result = launch("--single", TINY, "--dry-run", f"output_dir={out}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ready to train." in result.stdout
    for check in ("SD2 model", "training data", "validation data", "LPIPS weights", "discriminator"):
        assert check in result.stdout
    assert "lambda_ssim: 1.0" in result.stdout  # the resolved config is printed
    assert not (out / "summary.json").exists() and not (out / "checkpoints").exists()


def test_dry_run_reports_a_broken_validation_folder(tmp_path):
    result = launch("--single", TINY, "--dry-run", f"data_config.val.val_dir={tmp_path / 'missing'}")
    assert result.returncode == 2
    assert "validation data" in result.stdout and "FAILED" in result.stdout
    assert "missing" in result.stdout


def test_dry_run_names_a_truncated_validation_image_before_anything_trains(tmp_path):
    import shutil

    from hypir_core.demo import resolve_path

    val = tmp_path / "val"
    shutil.copytree(resolve_path("demo://aio/val"), val)
    broken = sorted((val / "Haze" / "GT").iterdir())[0]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])  # the header survives, the pixels do not
    result = launch("--single", TINY, "--dry-run", f"data_config.val.val_dir={val}", COLUMNS="400")
    assert result.returncode == 2
    assert "FAILED" in result.stdout and f"Cannot read image '{broken}'" in result.stdout


def test_sweep_mode_errors_name_the_fix():
    missing = launch("sweeps/no_such_spec.yaml")
    assert missing.returncode == 2 and "no_such_spec.yaml' does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr
    overrides = launch("sweeps/quickstart.yaml", "lambda_l2=2")
    assert overrides.returncode == 2 and "under 'overrides:'" in overrides.stderr
    resume_single = launch("--single", "configs/tiny.yaml", "--resume")
    assert resume_single.returncode == 2 and "resume_from_checkpoint=latest" in resume_single.stderr
