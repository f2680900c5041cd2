"""A process that trained one run trains the next as a fresh process would (sweeps reuse trial processes).

Each case runs in its own Python process with one torch thread, so "a fresh process" is real and the
float order is the same in both: a run after another run must give bit-identical scores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

SCRIPT = r"""
import json, sys
from hypir_core.config import load_config
from hypir_core.trainer import train

def run(out, **extra):
    base = {"output_dir": out, "report_to": "none", "log_image_steps": 0, "log_grad_steps": 0,
            "max_train_steps": 20, "validation_steps": 10, "checkpointing_steps": 10,
            "data_config.val.num_samples_per_type": 2}
    base.update(extra)
    summary = train(load_config(sys.argv[2], [f"{k}={v}" for k, v in base.items()]), progress_bar=False)
    return [r["metrics"]["val/Final_Score"] for r in summary.rounds]

work, plan = sys.argv[1], sys.argv[3]
scores = {}
if plan == "alone":
    scores["B"] = run(f"{work}/B")
else:
    # Another run first, with another precision, rank and seed: accelerate's state, the model, the
    # validation cache and the RNG all belong to that run. Then B, then B again from its round-1
    # checkpoint (written by the fresh process).
    scores["A"] = run(f"{work}/A", mixed_precision="bf16", lora_rank=8, seed=7, lambda_l2=0.5, max_train_steps=10)
    scores["B"] = run(f"{work}/B1")
    scores["B resumed"] = run(f"{work}/B2", resume_from_checkpoint=f"{work}/B/checkpoints/checkpoint-10")
print("SCORES " + json.dumps(scores))
"""


def run_plan(tmp_path, plan: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), str(ROOT / "configs" / "tiny.yaml"), plan],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("SCORES "))
    return json.loads(line[len("SCORES "):])


def test_a_run_after_another_in_one_process_scores_as_in_a_fresh_process(tmp_path):
    alone = run_plan(tmp_path, "alone")["B"]
    after = run_plan(tmp_path, "after")
    assert len(after["A"]) == 1  # the first run, in bf16, really ran
    assert after["B"] == alone  # bit-identical: nothing of the first run leaked into the second
    # Resumed from its round-1 checkpoint in a process that trained two runs first: the same round 2.
    assert after["B resumed"][-1] == pytest.approx(alone[-1], abs=1e-4)
