"""Population-based training on the tiny model: exploits restore another trial's whole state and go on with
new values; the winner's history replays from scratch as one config; a killed PBT sweep resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml
from test_reliability import ROOT, finish, start, summaries, write_spec

pytestmark = pytest.mark.slow


def pbt_spec(tmp_path, synch: bool, validation_steps: int = 10):
    spec = write_spec(tmp_path, "pbt", {"type": "pbt", "perturbation_interval": 2, "quantile_fraction": 0.5,
                                        "synch": synch, "hyperparam_mutations": {
                                            "lr_G": {"type": "loguniform", "low": 1.0e-4, "high": 3.0e-3},
                                            "lambda_gan": {"type": "loguniform", "low": 0.01, "high": 1.0}}},
                      num_samples=4, steps=40)
    raw = yaml.safe_load(spec.read_text())
    raw["overrides"]["validation_steps"] = validation_steps
    raw["space"] = {"lr_G": {"type": "loguniform", "low": 1.0e-4, "high": 3.0e-3},
                    "lambda_gan": {"type": "loguniform", "low": 0.01, "high": 1.0}}
    raw["search"].update(max_concurrent_trials=4, points_to_evaluate=[
        {"lr_G": 3.0e-3, "lambda_gan": 0.3}, {"lr_G": 1.0e-4, "lambda_gan": 0.3},
        {"lr_G": 1.0e-3, "lambda_gan": 0.01}, {"lr_G": 2.0e-4, "lambda_gan": 1.0}])
    raw["resources"] = {"gpu": 0, "cpu": 0.5}
    spec.write_text(yaml.safe_dump(raw))
    return spec, tmp_path / "sweep_results" / "pbt"


def test_a_killed_pbt_sweep_resumes_and_every_trial_keeps_one_history(tmp_path):
    spec, sweep_dir = pbt_spec(tmp_path, synch=False)
    # Killed in a trial's last round; resumed to the end.
    code, output = finish(start(spec, tmp_path, fault="kill-driver:35"))
    assert code == -signal.SIGKILL, output[-3000:]
    code, output = finish(start(spec, tmp_path, "--resume"))
    assert code == 0, output[-4000:]
    done = summaries(sweep_dir)
    assert len(done) == 4 and all(s["status"] == "completed" for s in done.values())
    for summary in done.values():  # every trial's history: rounds 10..40, once each, as its weights saw them
        assert [r["metrics"]["step"] for r in summary["rounds"]] == [10, 20, 30, 40]
        # Exploits (whether any happens depends on the order trials arrive in) come at the end of a
        # round: round 2, or round 3 after the resume (PBT's statistics start afresh then).
        assert {segment["from_step"] for segment in summary["lineage"][1:]} <= {21, 31}


def test_synchronous_pbt_killed_after_round_4_resumes_and_its_winner_replays_as_one_config(tmp_path):
    # Synchronous PBT ranks the whole population every 2 of its 8 rounds: the weaker half always exploits
    # at round 2. The driver is killed in round 5 (after the round-4 perturbation) and the sweep resumed:
    # the population's state (each trial's times and scores, the next synchronisation point) comes back
    # with it, so the population goes on instead of waiting for a round no trial trains towards.
    # After the resume each trial takes 10 s to hand Tune its round-6 state (slow-save), so the round-6
    # synchronisation comes while the first trials there are still saving: Ray stopped such a trial for
    # good after its first round on the state it was given (ray-project/ray#57906).
    spec, sweep_dir = pbt_spec(tmp_path, synch=True, validation_steps=5)
    code, output = finish(start(spec, tmp_path, fault="kill-driver:25"))
    assert code == -signal.SIGKILL, output[-3000:]
    code, output = finish(start(spec, tmp_path, "--resume", fault="slow-save:30"))
    assert code == 0, output[-4000:]
    done = summaries(sweep_dir)
    # What each trial's attempts were, and what the driver printed, if a trial did not end completed.
    story = json.dumps({name: [s["status"], len(s["rounds"]), s["attempts"]] for name, s in done.items()}, indent=1)
    assert len(done) == 4 and all(s["status"] == "completed" for s in done.values()), story + output[-3000:]
    for summary in done.values():  # every trial's history once: rounds 5, 10, ..., 40
        assert [r["metrics"]["step"] for r in summary["rounds"]] == list(range(5, 45, 5))
        assert {segment["from_step"] for segment in summary["lineage"][1:]} <= {11, 21, 31}
    exploited = [s for s in done.values() if any(a.get("exploited") and a["from_step"] == 10 for a in s["attempts"])]
    assert len(exploited) >= 2, "the weaker half did not exploit at round 2"

    analysed = subprocess.run([sys.executable, str(ROOT / "analyze.py"), str(sweep_dir)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600)
    assert analysed.returncode == 0, analysed.stdout[-2000:] + analysed.stderr[-2000:]
    schedule_path = sweep_dir / "analysis" / "best_schedule.yaml"
    assert (sweep_dir / "analysis" / "plots" / "schedule.png").exists()
    winner_line = next(line for line in schedule_path.read_text().splitlines() if line.startswith("# the schedule"))
    winner = done["trial_" + winner_line.split("trial ")[1].split(" ")[0]]
    config = yaml.safe_load(schedule_path.read_text())
    assert len(config["schedule"]) == sum(1 for s in winner["lineage"][1:] if s["params"] != winner["lineage"][0])

    # Replayed from scratch, the schedule trains what the population trained.
    replay = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--single", str(schedule_path),
                             f"output_dir={tmp_path / 'replay'}", "report_to=none", "--no-progress"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            # one torch thread, as the trials had (resources.cpu 0.5): the same float order
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert replay.returncode == 0, replay.stderr[-3000:]
    replayed = json.loads((tmp_path / "replay" / "summary.json").read_text())["rounds"]
    for ours, theirs in zip(replayed, winner["rounds"], strict=True):
        assert ours["metrics"]["val/Final_Score"] == pytest.approx(theirs["metrics"]["val/Final_Score"], abs=1e-4)


def test_a_trial_exploited_again_and_again_keeps_its_two_newest_copies(tmp_path):
    """Each exploit copies the donor's checkpoint into the receiver; the fourth must not collide with the third
    (older copies are removed, so their count is no name for the next)."""
    from hypir_sweep.population import copy_exploited

    trial_dir = tmp_path / "trial"
    for index in range(1, 6):
        donor = tmp_path / f"donor_{index}"
        donor.mkdir()
        (donor / "state.txt").write_text(str(index))
        copied = copy_exploited(str(donor), str(trial_dir))
        assert open(os.path.join(copied, "state.txt")).read() == str(index)
    assert sorted(os.listdir(trial_dir)) == ["exploited_0004", "exploited_0005"]
