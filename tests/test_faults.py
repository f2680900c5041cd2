"""Faults that are not interruptions: out of memory, a full disk, impossible or wasted resource requests.

Out of memory and a full disk cannot be caused on demand here; they go through the documented fault
hook (hypir_core.faults: HYPIR_SWEEP_FAULT names the fault and the step where it fires once), which
raises torch's own OutOfMemoryError and an OSError(ENOSPC) inside the real trainer.
"""

from __future__ import annotations

import subprocess
import sys

import optuna
import pytest
import yaml
from test_reliability import ROOT, finish, start, summaries, write_spec

from hypir_sweep.resources import Node, check_fits
from hypir_sweep.spec import SpecError, load_spec


@pytest.mark.slow
def test_out_of_memory_and_a_full_disk_each_end_one_trial_and_the_sweep_goes_on(tmp_path):
    spec = write_spec(tmp_path, "faulty", {"type": "fifo"}, num_samples=3, max_failures=0, steps=20)
    sweep_dir = tmp_path / "sweep_results" / "faulty"
    code, output = finish(start(spec, tmp_path, fault="oom:5,enospc:20"))
    assert code == 1, output[-3000:]  # the disk-full trial errored; the others ran
    by_status = {s["status"].split(" at ")[0]: (t, s) for t, s in summaries(sweep_dir).items()}
    assert set(by_status) == {"out of memory", "disk full", "completed"}, by_status.keys()

    oom_trial, oom = by_status["out of memory"]
    assert oom["status"] == "out of memory at step 5" and len(oom["attempts"]) == 1 and not oom["rounds"]
    full_trial, full = by_status["disk full"]
    assert f"disk full at {sweep_dir / full_trial / 'checkpoints' / 'checkpoint-20'}" in full["status"]
    assert [r["metrics"]["step"] for r in full["rounds"]] == [10]  # validated 20, could not save it: not reported
    # The checkpoint written before the disk filled is intact, and nothing half-written is left.
    kept = sorted((sweep_dir / full_trial).glob("checkpoint_*"))
    assert len(kept) == 1 and (kept[0] / "lora.pth").stat().st_size > 0
    assert yaml.safe_load((kept[0] / "hypir_round.json").read_text())["step"] == 10
    assert not list(sweep_dir.rglob("*.partial"))

    # analyze.py says what happened and what to do.
    board = subprocess.run([sys.executable, str(ROOT / "analyze.py"), str(sweep_dir)], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert board.returncode == 0, board.stderr[-2000:]
    assert "out of memory at step 5: lower data_config.train.batch_size" in board.stdout
    assert "disk full at" in board.stdout
    study = optuna.load_study(study_name="faulty", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    states = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert states[oom_trial[len("trial_"):]].state == optuna.trial.TrialState.FAIL
    assert states[oom_trial[len("trial_"):]].user_attrs["ending"] == "out of memory at step 5"

    # Space is back: --resume continues the disk-full trial from its checkpoint; the out-of-memory
    # trial is not run again.
    code, output = finish(start(spec, tmp_path, "--resume"))
    assert code == 0, output[-3000:]
    after = summaries(sweep_dir)
    assert after[full_trial]["status"] == "completed" and after[full_trial]["attempts"][-1]["from_step"] == 10
    assert [r["metrics"]["step"] for r in after[full_trial]["rounds"]] == [10, 20]
    assert after[oom_trial] == oom


def test_a_request_no_machine_can_meet_is_refused_before_anything_starts(tmp_path):
    path = write_spec(tmp_path, "greedy", {"type": "fifo"})
    raw = yaml.safe_load(path.read_text())
    raw["resources"] = {"gpu": 0, "cpu": 64}
    path.write_text(yaml.safe_dump(raw))
    for extra in ([], ["--dry-run"]):
        run = subprocess.run([sys.executable, str(ROOT / "launch.py"), str(path), "--no-progress", *extra],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert run.returncode == 2
        assert "asks for 64 CPU, but no node of this Ray cluster has that" in run.stdout + run.stderr
    assert not (tmp_path / "sweep_results").exists()


def test_an_autoscaling_cluster_gets_a_warning_not_a_refusal(tmp_path):
    spec = load_spec(write_spec(tmp_path, "scaling", {"type": "fifo"}))
    small = [Node(cpu=0.5, gpu=0)]
    assert "autoscaler adds one" in check_fits(spec, small, autoscaled=[Node(cpu=8, gpu=1)])
    assert "may never start" in check_fits(spec, small, autoscaled=[Node(cpu=0.5, gpu=0)])
    assert check_fits(spec, [Node(cpu=2, gpu=0)], autoscaled=None) is None
    with pytest.raises(SpecError, match="no node of this Ray cluster"):
        check_fits(spec, small, autoscaled=None)


def test_whole_gpus_above_one_per_trial_are_refused(tmp_path):
    path = write_spec(tmp_path, "two_gpus", {"type": "fifo"})
    raw = yaml.safe_load(path.read_text())
    raw["resources"] = {"gpu": 2, "cpu": 1}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="use gpu: 1, or a fraction such as 0.5"):
        load_spec(path)


def test_a_trial_given_no_gpu_trains_on_the_cpu():
    code = ("from hypir_sweep.trial import use_cpu_only; use_cpu_only()\n"
            "import torch; from accelerate import Accelerator\n"
            "assert torch.cuda.device_count() == 0, torch.cuda.device_count()\n"
            "print(Accelerator().device.type)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().endswith("cpu")


def test_a_space_that_allows_every_loss_weight_zero_is_warned_about(tmp_path):
    path = write_spec(tmp_path, "zeros", {"type": "fifo"})
    raw = yaml.safe_load(path.read_text())
    raw["overrides"].update({"lambda_ssim": 0, "lambda_gan": 0, "lambda_lpips": 0})
    raw["space"] = {key: {"type": "uniform", "low": 0.0, "high": 1.0, "q": 0.5} for key in ("lambda_l2", "lambda_l1")}
    raw["search"].pop("points_to_evaluate")
    path.write_text(yaml.safe_dump(raw))
    assert "every loss weight" in load_spec(path).warnings[0]
    raw["space"]["lambda_l1"]["low"] = 0.5
    path.write_text(yaml.safe_dump(raw))
    assert load_spec(path).warnings == ()
    # One searched weight that is the only one left: its low bound itself is refused.
    raw["overrides"]["lambda_l1"] = 0
    del raw["space"]["lambda_l1"]
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError, match="All loss weights are 0"):
        load_spec(path)
