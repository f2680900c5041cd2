"""Sweeps that survive interruptions: the driver killed at five moments and as it stops a trial, a damaged
state snapshot, trials that die (in processes reused from trial to trial), Ctrl-C.

Real Ray Tune, Optuna storage and training on the tiny model. Kills at moments that cannot be hit
by timing alone go through the documented fault hook (hypir_core.faults, HYPIR_SWEEP_FAULT), which
sends a real SIGKILL from inside the trial at a named step. The trainer is deterministic, so every
round of every trial must carry the score an uninterrupted sweep gives the same config.
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
import pytest
import yaml
from ray.tune import ExperimentAnalysis

from hypir_sweep.analysis import load_sweep

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
L2_VALUES = (0.5, 1.5, 2.5, 3.5)  # one trial each, in this order: the same configs with or without faults


def write_spec(tmp_path: Path, name: str, scheduler: dict, num_samples: int = 4, max_failures: int = 2,
               steps: int = 30, concurrent: int = 2) -> Path:
    spec = {"name": name, "base_config": str(ROOT / "configs" / "tiny.yaml"),
            "overrides": {"max_train_steps": steps, "validation_steps": 10, "log_image_steps": 0,
                          "log_grad_steps": 0, "data_config.val.num_samples_per_type": 2},
            "space": {"lambda_l2": {"type": "uniform", "low": 0.5, "high": 4.0}},
            "search": {"num_samples": num_samples, "max_concurrent_trials": concurrent,
                       "points_to_evaluate": [{"lambda_l2": v} for v in L2_VALUES[:num_samples]]},
            "scheduler": scheduler, "resources": {"gpu": 0, "cpu": 1}, "tracking": {"report_to": "none"},
            "max_failures": max_failures}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def start(spec: Path, cwd: Path, *extra: str, fault: str = "", **more_env: str) -> subprocess.Popen:
    env = {**os.environ, **more_env, **({"HYPIR_SWEEP_FAULT": fault} if fault else {})}
    env.pop("HYPIR_SWEEP_FAULT_DIR", None)
    return subprocess.Popen([sys.executable, str(ROOT / "launch.py"), str(spec), "--no-progress", *extra], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> str:
    """SIGKILL the driver as soon as ``ready()`` holds; return what it printed."""
    deadline = time.time() + timeout
    while not ready():
        assert process.poll() is None, "the sweep ended before it could be killed:\n" + process.stdout.read()[-3000:]
        assert time.time() < deadline, "the moment to kill never came"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    return finish(process)[1]


def analyze(sweep_dir: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "analyze.py"), str(sweep_dir)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def summaries(sweep_dir: Path) -> dict[str, dict]:
    found = {}
    for path in sorted(sweep_dir.glob("trial_*/summary.json")):
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except ValueError:  # being replaced right now
            continue
    return found


def scores_by_config(sweep_dir: Path) -> dict[float, dict[int, float]]:
    """{lambda_l2: {step: Final_Score}} over the trials of a sweep."""
    out = {}
    for summary in summaries(sweep_dir).values():
        l2 = summary["config"]["sweep"]["params"]["lambda_l2"]
        out[l2] = {r["metrics"]["step"]: r["metrics"]["val/Final_Score"] for r in summary["rounds"]}
    return out


def study_records(sweep_dir: Path, name: str) -> dict[str, optuna.trial.FrozenTrial]:
    """The newest study record of each Tune trial, and no record left RUNNING."""
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    newest = {}
    for frozen in study.trials:
        if "ray_trial_id" in frozen.user_attrs and frozen.user_attrs.get("ending") != "orphaned by an interrupted sweep":
            newest[frozen.user_attrs["ray_trial_id"]] = frozen
    return newest


def assert_study_agrees(sweep_dir: Path, name: str, trial_ids) -> None:
    """Every trial's study record says what its summary says: COMPLETE at its best round, PRUNED with its rounds."""
    newest, after = study_records(sweep_dir, name), summaries(sweep_dir)
    for trial_id in trial_ids:
        summary, frozen = after[f"trial_{trial_id}"], newest[trial_id]
        steps = [r["metrics"]["step"] for r in summary["rounds"]]
        assert sorted(frozen.intermediate_values) == list(range(1, len(steps) + 1)), trial_id
        if summary["status"] == "completed":
            assert frozen.state == optuna.trial.TrialState.COMPLETE, trial_id
            assert frozen.value == pytest.approx(max(r["metrics"]["val/Final_Score"] for r in summary["rounds"]))
        else:
            assert summary["status"].startswith("stopped early"), (trial_id, summary["status"])
            assert frozen.state == optuna.trial.TrialState.PRUNED, trial_id


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[float, dict[int, float]]:
    """The four configs of these sweeps, uninterrupted, every one to the full budget: {lambda_l2: {step: score}}."""
    tmp_path = tmp_path_factory.mktemp("reference")
    code, output = finish(start(write_spec(tmp_path, "reference", {"type": "fifo"}), tmp_path))
    assert code == 0, output[-3000:]
    scores = scores_by_config(tmp_path / "sweep_results" / "reference")
    assert sorted(scores) == list(L2_VALUES) and all(sorted(r) == [10, 20, 30] for r in scores.values())
    return scores


def assert_scores_match(sweep_dir: Path, reference: dict) -> None:
    """No round lost or reported twice, each with the score of the uninterrupted sweep."""
    for l2, rounds in scores_by_config(sweep_dir).items():
        steps = list(rounds)
        assert steps == [10, 20, 30][:len(steps)], (l2, steps)
        for step, score in rounds.items():
            # Within float noise of a resumed optimizer (the checkpoint's Adam state is restored exactly).
            assert score == pytest.approx(reference[l2][step], abs=1e-4), (l2, step)


def test_kill_the_driver_anywhere_then_resume(tmp_path, reference):
    spec = write_spec(tmp_path, "chain", {"type": "asha", "grace_period": 1, "reduction_factor": 2})
    sweep_dir = tmp_path / "sweep_results" / "chain"
    finished_at_kill: dict[str, str] = {}

    def note_finished():
        for trial, summary in summaries(sweep_dir).items():
            if summary["status"] == "completed":
                finished_at_kill.setdefault(trial, summary["finished"])

    # 1. While Ray starts: the spec copy is written, Ray's first state snapshot may not be.
    kill_when(start(spec, tmp_path), lambda: (sweep_dir / "sweep_spec.yaml").exists())
    # 2. As the first trials start.
    kill_when(start(spec, tmp_path, "--resume"), lambda: any(sweep_dir.glob("trial_*/config.yaml")))
    # 3-5. Mid-round, while a trial hands a checkpoint to Tune, and in a trial's last round: the
    # fault hook kills the driver from inside the trial at exactly that step.
    for fault in ("kill-driver:15", "kill-driver-persisting:20", "kill-driver:30"):
        code, output = finish(start(spec, tmp_path, "--resume", fault=fault))
        assert code == -signal.SIGKILL, f"{fault} never fired: {output[-3000:]}"
        note_finished()
        if fault == "kill-driver-persisting:20":
            # A killed sweep is analysed as far as it got, and a plain start does not overwrite it.
            partial = analyze(sweep_dir, tmp_path)
            assert partial.returncode == 0, partial.stderr[-2000:]
            assert (sweep_dir / "analysis" / "best_config.yaml").exists()
            code, output = finish(start(spec, tmp_path))
            assert code == 2 and "--resume" in output
            # An edited spec does not silently change the sweep being resumed.
            original = spec.read_text()
            edited = yaml.safe_load(original)
            edited["search"]["num_samples"] = 6
            spec.write_text(yaml.safe_dump(edited))
            code, output = finish(start(spec, tmp_path, "--resume"))
            assert code == 2 and "search.num_samples: 4 -> 6" in output, output[-2000:]
            spec.write_text(original)
    # A state snapshot cut short as it was written (the driver died mid-copy): the resume uses the one
    # before it, says so, and the study fills in what came after.
    newest = max(sweep_dir.glob("experiment_state-*.json"))
    newest.write_text(newest.read_text()[: len(newest.read_text()) // 2])
    code, output = finish(start(spec, tmp_path, "--resume"))
    assert code == 0, output[-4000:]
    assert "Best trial" in output
    assert f"{newest.name} is damaged" in " ".join(output.split()), output[-3000:]

    # Every trial ended TERMINATED (the retried ones too), none errored, and each config was trained once: a
    # trial that ended after the snapshot the resume started from is on the leaderboard, not trained again.
    sweep = load_sweep(str(sweep_dir))
    assert {r.ray_status for r in sweep.rows} == {"TERMINATED"}
    assert sorted(r.params["lambda_l2"] for r in sweep.rows) == list(L2_VALUES)

    after = summaries(sweep_dir)
    fired = sorted(p.name for p in (sweep_dir / ".faults").iterdir())
    assert fired == [".fault-kill-driver-15", ".fault-kill-driver-30", ".fault-kill-driver-persisting-20"]
    assert sorted(scores_by_config(sweep_dir)) == list(L2_VALUES)
    assert_scores_match(sweep_dir, reference)
    for trial, stamp in finished_at_kill.items():
        assert after[trial]["finished"] == stamp, f"{trial} finished before a kill and was trained again"
        assert all(a.get("replayed") for a in after[trial]["attempts"][1:]), trial
    # The study says what happened: completed trials COMPLETE with their best round, stopped ones PRUNED
    # with every round they ran, nothing left RUNNING.
    assert_study_agrees(sweep_dir, "chain", [r.trial for r in sweep.rows])
    # Tune's snapshot holds no second copy of the searcher (a stopper holding one grew with every trial).
    for path in sweep_dir.glob("experiment_state-*.json"):
        assert len(json.dumps(json.loads(path.read_text())["runner_data"]["_stopper"])) < 1000, path.name

    # The leaderboard counts each round once and every attempt's time.
    board = analyze(sweep_dir, tmp_path)
    assert board.returncode == 0, board.stderr[-3000:]
    import pandas as pd

    table = pd.read_csv(sweep_dir / "analysis" / "leaderboard.csv", dtype={"trial": str})
    for _, row in table.iterrows():
        summary = after[f"trial_{row['trial']}"]
        assert row["rounds"] == len(summary["rounds"])
        assert row["hours"] * 3600 == pytest.approx(sum(a["seconds"] for a in summary["attempts"]), abs=0.5)


def test_a_trial_that_ended_after_the_snapshot_resumed_from_is_counted_not_trained_again(tmp_path):
    # One trial at a time. The first driver dies as its first trial starts, after Ray's first state snapshot;
    # the second finishes the sweep; then its snapshot is found damaged, so the third resumes from the
    # first's, which knew nothing of the second trial. The study and the trial folders hold it.
    spec = write_spec(tmp_path, "lost", {"type": "fifo"}, num_samples=2, steps=20, concurrent=1)
    sweep_dir = tmp_path / "sweep_results" / "lost"
    kill_when(start(spec, tmp_path), lambda: any(sweep_dir.glob("experiment_state-*.json"))
              and any(sweep_dir.glob("trial_*/config.yaml")))
    code, output = finish(start(spec, tmp_path, "--resume"))
    assert code == 0, output[-3000:]
    before = {name: s["finished"] for name, s in summaries(sweep_dir).items() if s["status"] == "completed"}
    assert len(before) == 2
    newest = max(sweep_dir.glob("experiment_state-*.json"))
    newest.write_text(newest.read_text()[:100])

    code, output = finish(start(spec, tmp_path, "--resume"))
    assert code == 0, output[-3000:]
    assert "is damaged" in output
    after = summaries(sweep_dir)
    assert {name: after[name]["finished"] for name in before} == before, "a trial that had ended was trained again"
    assert not [name for name in after if name not in before and after[name]["status"] == "completed"], \
        "the resumed sweep trained a config more than num_samples"
    rows = load_sweep(str(sweep_dir)).rows
    assert sorted(f"trial_{r.trial}" for r in rows) == sorted(before)
    assert sorted(r.params["lambda_l2"] for r in rows) == list(L2_VALUES[:2])
    assert {r.status for r in rows} == {"completed"} and all(r.terminated for r in rows)


def test_a_trial_stopped_as_the_driver_dies_stays_stopped(tmp_path):
    # One trial at a time, so the order is fixed: a fast learner runs its full budget, then a slow one
    # scores far below it at the first rung and ASHA stops it. The driver is killed the moment the study
    # records that stop, before Tune's state snapshot can say so.
    # On the way, the fast learner's process takes 30 s to end after Tune stopped it (slow-end), while the
    # slow learner waits for it in that reused process only 5 s: it fails and is retried in a fresh one.
    spec = write_spec(tmp_path, "stopped", {"type": "asha", "grace_period": 1, "reduction_factor": 2},
                      num_samples=2, concurrent=1)
    raw = yaml.safe_load(spec.read_text())
    raw["overrides"]["ema_warmup"] = True  # round 1 scores the trained weights: lr_G decides it by far
    raw["space"] = {"lr_G": {"type": "loguniform", "low": 1.0e-4, "high": 3.0e-3}}
    raw["search"]["points_to_evaluate"] = [{"lr_G": 3.0e-3}, {"lr_G": 1.0e-4}]
    spec.write_text(yaml.safe_dump(raw))
    sweep_dir = tmp_path / "sweep_results" / "stopped"
    code, output = finish(start(spec, tmp_path, fault="slow-end:30,kill-driver-pruned:10",
                                HYPIR_SWEEP_REUSE_WAIT_S="5"))
    assert code == -signal.SIGKILL, output[-3000:]

    resumed_at = time.time()
    code, output = finish(start(spec, tmp_path, "--resume"))
    assert code == 0, output[-4000:]
    analysis = ExperimentAnalysis(str(sweep_dir))
    assert {t.status for t in analysis.trials} == {"TERMINATED"} and len(analysis.trials) == 2
    by_lr = {s["config"]["sweep"]["params"]["lr_G"]: s for s in summaries(sweep_dir).values()}
    slow = by_lr[1.0e-4]
    assert slow["status"] == "stopped early at step 10" and len(slow["rounds"]) == 1
    assert all(a["started"] < resumed_at for a in slow["attempts"]), "the stopped trial was started again"
    assert by_lr[3.0e-3]["status"] == "completed" and len(by_lr[3.0e-3]["rounds"]) == 3
    slow_dir = sweep_dir / f"trial_{slow['config']['sweep']['trial_id']}"
    assert "was still writing after 5 s" in (slow_dir / "error.txt").read_text()  # its first attempt, retried
    assert slow["attempts"][0]["pid"] != by_lr[3.0e-3]["attempts"][0]["pid"]
    records = study_records(sweep_dir, "stopped")
    slow_record = records[slow["config"]["sweep"]["trial_id"]]
    assert slow_record.state == optuna.trial.TrialState.PRUNED and sorted(slow_record.intermediate_values) == [1]
    assert_study_agrees(sweep_dir, "stopped", [t.trial_id for t in analysis.trials])


def test_trials_that_die_are_retried_and_processes_go_on_to_the_next_trial(tmp_path, reference):
    # Every trial trains every step (FIFO), so both faults land: one trial raises at step 12, one process is
    # killed at step 25. Three trials share two processes' worth of CPUs, so the third runs in a process that
    # trained one before it.
    spec = write_spec(tmp_path, "deaths", {"type": "fifo"}, num_samples=3)
    sweep_dir = tmp_path / "sweep_results" / "deaths"
    code, output = finish(start(spec, tmp_path, fault="error:12,kill-trial:25"))
    assert code == 0, output[-4000:]
    fired = sorted(p.name for p in (sweep_dir / ".faults").iterdir())
    assert fired == [".fault-error-12", ".fault-kill-trial-25"]
    done = summaries(sweep_dir)
    assert len(done) == 3 and all(s["status"] == "completed" for s in done.values())
    assert_scores_match(sweep_dir, reference)
    assert sum(len(s["attempts"]) for s in done.values()) == 5  # two retries, each from its last round
    retried = [a for s in done.values() for a in s["attempts"][1:]]
    assert sorted(a["from_step"] for a in retried) == [10, 20]
    last = next(s for s in done.values() if s["config"]["sweep"]["params"]["lambda_l2"] == L2_VALUES[2])
    earlier = {a["pid"] for s in done.values() if s is not last for a in s["attempts"]}
    assert last["attempts"][0]["pid"] in earlier, "the third trial did not run in a process that trained before"
    assert_study_agrees(sweep_dir, "deaths", [t.trial_id for t in ExperimentAnalysis(str(sweep_dir)).trials])


def test_ctrl_c_stops_cleanly_and_a_second_exits_at_once(tmp_path):
    spec = write_spec(tmp_path, "interrupted", {"type": "fifo"}, num_samples=2)
    sweep_dir = tmp_path / "sweep_results" / "interrupted"

    def first_round():
        return any(s["rounds"] for s in summaries(sweep_dir).values())

    # Twice: the second Ctrl-C ends the driver at once, without waiting for the trials.
    process = start(spec, tmp_path)
    deadline = time.time() + 300
    while not first_round():
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    time.sleep(0.3)
    interrupted_at = time.time()
    process.send_signal(signal.SIGINT)
    code, output = finish(process, timeout=60)
    assert code == 130 and "Interrupted twice" in output, output[-3000:]
    assert time.time() - interrupted_at < 20

    # Once: the sweep stops its trials, saves its state and prints the command that resumes it.
    # (A trial of the first driver can outlive it by a moment and write one more round: wait for a round
    # of an attempt that this driver started.)
    resumed_at = time.time()
    process = start(spec, tmp_path, "--resume")
    deadline = time.time() + 300
    while not any(a.get("started", 0) > resumed_at for s in summaries(sweep_dir).values()
                  for a in s.get("attempts", [])):
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    code, output = finish(process, timeout=300)
    assert code == 130, output[-3000:]
    assert f"{spec} --resume" in output

    code, output = finish(start(spec, tmp_path, "--resume"))
    assert code == 0, output[-3000:]
    done = summaries(sweep_dir)
    assert len(done) == 2 and all(s["status"] == "completed" for s in done.values())
    assert all([r["metrics"]["step"] for r in s["rounds"]] == [10, 20, 30] for s in done.values())
