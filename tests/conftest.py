"""Shared fixtures: one demo cache per test session, SwanLab kept offline and inside tmp folders.

LPIPS runs offline here: configs set ``lpips_weights: random``, which plants seeded random VGG16 and
LPIPS-head weights in the session cache and loads them through pyiqa's own loading code.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """HYPIR_SWEEP_CACHE for the whole session (the demo model and data are built once, here)."""
    cache = os.environ.get("HYPIR_SWEEP_CACHE") or str(tmp_path_factory.mktemp("hypir-cache"))
    os.environ["HYPIR_SWEEP_CACHE"] = cache
    swanlab_root = tmp_path_factory.mktemp("swanlab-root")
    for key in [k for k in os.environ if k.startswith("SWANLAB_")]:
        del os.environ[key]
    os.environ["SWANLAB_ROOT"] = str(swanlab_root)  # no saved login: SwanLab stays offline
    yield cache


def tiny_overrides(output_dir, **extra) -> list[str]:
    """Overrides that make configs/tiny.yaml fast enough for a test."""
    base = {"output_dir": str(output_dir), "report_to": "none", "log_image_steps": 0, "log_grad_steps": 0}
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def resumable_scores(rounds: list[dict]) -> list[dict]:
    """Each round's metrics but the other colour fix's, which a run scores on its final round only (an
    interrupted attempt's last round has them, the uninterrupted run's same round does not)."""
    return [{k: v for k, v in r["metrics"].items() if not k.startswith("val/color_fix/")} for r in rounds]


@pytest.fixture(scope="session")
def quickstart_sweep(tmp_path_factory):
    """sweeps/quickstart.yaml run once per test session through launch.py: (sweep folder, the process result)."""
    import subprocess
    import sys

    cwd = tmp_path_factory.mktemp("quickstart")
    run = subprocess.run([sys.executable, str(ROOT / "launch.py"), str(ROOT / "sweeps" / "quickstart.yaml"),
                          "--no-progress"], cwd=cwd, capture_output=True, text=True, timeout=900)
    return cwd / "sweep_results" / "quickstart", run
