"""Pareto sweeps stop by the front (multi-objective ASHA): the rung's order, the decisions against scalar ASHA's,
the scheduler's state saved with the sweep and refilled from the study, and the spec's default."""

from __future__ import annotations

import pickle

import numpy as np
import optuna
import pytest
import yaml
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler
from test_sweep_spec import write_spec

from hypir_sweep.assembly import make_scheduler
from hypir_sweep.confirm import ConfirmingMOASHA
from hypir_sweep.moasha import fronts, rung_order
from hypir_sweep.resume import SchedulerState
from hypir_sweep.search import ROUND_POINTS_ATTR, RAY_TRIAL_ATTR
from hypir_sweep.spec import SpecError, load_spec

OBJECTIVES = [("val/PSNR", "max"), ("val/LPIPS", "min")]


class Stub:
    """What Tune's schedulers read of a trial."""

    def __init__(self, trial_id: str):
        self.trial_id, self.status, self.config = trial_id, "RUNNING", {}


def moasha(max_t: int = 4) -> ConfirmingMOASHA:
    scheduler = ConfirmingMOASHA(OBJECTIVES, time_attr="round", max_t=max_t, grace_period=1, reduction_factor=2)
    scheduler.set_search_properties("val/Final_Score", "max")
    return scheduler


def decide(scheduler, trial_id: str, round_number: int, psnr: float, lpips: float, score: float) -> str:
    trial = Stub(trial_id)
    if trial_id not in scheduler._trial_info:
        scheduler.on_trial_add(None, trial)
    return scheduler.on_trial_result(None, trial, {"round": round_number, "val/PSNR": psnr, "val/LPIPS": lpips,
                                                   "val/Final_Score": score})


# Four trials at their first round, in this order: a balanced one, one worse in both, the front's PSNR end
# and the front's LPIPS end. Their scalar score ranks the LPIPS end below the dominated trial's cutoff.
ARRIVALS = [("balanced", 20.0, 0.20, 25.0), ("dominated", 17.0, 0.35, 20.0), ("psnr_end", 21.0, 0.30, 24.0),
            ("lpips_end", 17.5, 0.05, 19.0)]


def test_the_front_keeps_both_its_ends_where_scalar_asha_cuts_one():
    scalar = AsyncHyperBandScheduler(time_attr="round", metric="val/Final_Score", mode="max", max_t=4,
                                     grace_period=1, reduction_factor=2)
    front = moasha()
    by_front = {name: decide(front, name, 1, psnr, lpips, score) for name, psnr, lpips, score in ARRIVALS}
    by_score = {}
    for name, psnr, lpips, score in ARRIVALS:
        trial = Stub(name)
        scalar.on_trial_add(None, trial)
        by_score[name] = scalar.on_trial_result(None, trial, {"round": 1, "val/Final_Score": score})
    assert by_front == {"balanced": "CONTINUE", "dominated": "STOP", "psnr_end": "CONTINUE", "lpips_end": "CONTINUE"}
    assert by_score["lpips_end"] == TrialScheduler.STOP and by_score["dominated"] == TrialScheduler.STOP


def test_a_rung_is_ordered_front_by_front_ends_first():
    losses = np.array([[-20.0, 0.20], [-17.0, 0.35], [-21.0, 0.30], [-17.5, 0.05], [-16.0, 0.40]])
    assert [sorted(f.tolist()) for f in fronts(losses)] == [[0, 2, 3], [1], [4]]
    # The PSNR end first, then the point farthest from it (the LPIPS end), then the middle; then the next fronts.
    assert rung_order(losses) == [2, 3, 0, 1, 4]
    # With one objective the order is by value, as ASHA ranks; a failed trial (nan) comes last.
    assert rung_order([[3.0], [1.0], [np.nan], [2.0]]) == [1, 3, 0, 2]


def test_with_one_objective_it_keeps_the_best_half_of_each_rung_as_asha_does():
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = rng.normal(size=9)
        front = ConfirmingMOASHA([("score", "max")], time_attr="round", max_t=4, grace_period=1, reduction_factor=2)
        front.set_search_properties("score", "max")
        kept = []
        for index, value in enumerate(values):
            trial = Stub(str(index))
            front.on_trial_add(None, trial)
            kept.append(front.on_trial_result(None, trial, {"round": 1, "score": value}) == "CONTINUE")
        # ASHA's rule: a trial goes on while among the best ceil(n / 2) of the n recorded, itself included.
        expected = [sorted(values[:n + 1], reverse=True).index(v) < np.ceil((n + 1) / 2) for n, v in enumerate(values)]
        assert kept == expected


def test_a_trial_at_the_full_budget_is_stopped_and_recorded():
    scheduler = moasha(max_t=2)
    assert decide(scheduler, "a", 1, 20.0, 0.2, 25.0) == "CONTINUE"
    assert decide(scheduler, "a", 2, 21.0, 0.2, 26.0) == "STOP"  # the budget's end, as ASHA
    assert decide(scheduler, "b", 1, 19.0, 0.3, 24.0) == "STOP"  # dominated at round 1


def test_its_rungs_are_saved_with_the_sweep_and_restored():
    scheduler = moasha()
    for name, psnr, lpips, score in ARRIVALS[:3]:
        decide(scheduler, name, 1, psnr, lpips, score)
    saved = pickle.loads(pickle.dumps(SchedulerState(scheduler).get_state()))
    restored = moasha()
    SchedulerState(restored).set_state(saved)
    assert restored._brackets[0]._rungs == scheduler._brackets[0]._rungs
    assert decide(restored, "lpips_end", 1, 17.5, 0.05, 19.0) == "CONTINUE"
    assert decide(restored, "worst", 1, 16.0, 0.40, 18.0) == "STOP"
    assert decide(moasha(), "worst", 1, 16.0, 0.40, 18.0) == "CONTINUE"  # an empty rung would have let it on


def test_on_resume_its_rungs_are_refilled_from_the_study():
    study = optuna.create_study(directions=["maximize", "minimize"])
    distributions = {"lambda_l2": optuna.distributions.FloatDistribution(0.5, 4.0)}
    for name, psnr, lpips, _ in ARRIVALS[:3]:
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED, params={"lambda_l2": 1.0}, distributions=distributions,
            user_attrs={RAY_TRIAL_ATTR: name, ROUND_POINTS_ATTR: {"1": [psnr, lpips]}}))
    scheduler = moasha()
    scheduler.refill({t.user_attrs[RAY_TRIAL_ATTR]: t for t in study.trials})
    rung_1 = dict(scheduler._brackets[0]._rungs)[1]
    assert rung_1 == {"balanced": (-20.0, 0.20), "dominated": (-17.0, 0.35), "psnr_end": (-21.0, 0.30)}
    assert decide(scheduler, "worst", 1, 16.0, 0.40, 18.0) == "STOP"


def pareto_spec(tmp_path, scheduler=None):
    return write_spec(tmp_path, objectives=[{"metric": m, "mode": d} for m, d in OBJECTIVES], scheduler=scheduler)


def test_a_pareto_sweep_stops_by_its_front_unless_the_spec_says_otherwise(tmp_path):
    spec = load_spec(pareto_spec(tmp_path))
    assert spec.scheduler.type == "moasha" and isinstance(make_scheduler(spec), ConfirmingMOASHA)
    assert load_spec(pareto_spec(tmp_path, {"grace_period": 2})).scheduler.grace_period == 2
    assert load_spec(pareto_spec(tmp_path, {"type": "asha"})).scheduler.type == "asha"
    assert load_spec(pareto_spec(tmp_path, {"type": "fifo"})).scheduler.type == "fifo"
    assert load_spec(write_spec(tmp_path)).scheduler.type == "asha"  # one metric: ASHA as before


def test_moasha_without_objectives_is_refused_in_one_sentence(tmp_path):
    path = write_spec(tmp_path, scheduler={"type": "moasha"})
    with pytest.raises(SpecError) as refused:
        load_spec(path)
    assert str(refused.value) == (f"'scheduler.type' in {path} is moasha, which stops trials by the front of several "
                                  "objectives, but the spec has none: add objectives (2-3 metrics), or use type asha.")
    with pytest.raises(SpecError, match="grace_period"):
        load_spec(pareto_spec(tmp_path, {"type": "moasha", "grace_period": 9}))


def test_the_spec_copy_names_the_scheduler_it_resolved_to(tmp_path):
    from hypir_sweep.spec import spec_copy

    copy = spec_copy(load_spec(pareto_spec(tmp_path)))
    assert copy["scheduler_type"] == "moasha" and "scheduler" not in yaml.safe_load(pareto_spec(tmp_path).read_text())


LR_POINTS = (3.0e-3, 1.0e-4, 1.0e-3, 3.0e-4)  # one trial each, one at a time, in this order


@pytest.mark.slow
def test_a_pareto_sweep_killed_as_it_stops_a_trial_resumes_with_its_rungs(tmp_path):
    import signal
    import time

    import test_reliability as rel

    spec = rel.write_spec(tmp_path, "front", {"grace_period": 1, "reduction_factor": 2}, concurrent=1)
    raw = yaml.safe_load(spec.read_text())
    raw["objectives"] = [{"metric": m, "mode": d} for m, d in OBJECTIVES]
    raw["overrides"]["ema_warmup"] = True  # round 1 scores the trained weights: the slow learner is far behind
    raw["space"] = {"lr_G": {"type": "loguniform", "low": 1.0e-4, "high": 3.0e-3}}
    raw["search"]["points_to_evaluate"] = [{"lr_G": lr} for lr in LR_POINTS]
    spec.write_text(yaml.safe_dump(raw))
    sweep_dir = tmp_path / "sweep_results" / "front"
    # The second trial is stopped at its first round; the driver dies the moment the study records it.
    code, output = rel.finish(rel.start(spec, tmp_path, fault="kill-driver-pruned:10"))
    assert code == -signal.SIGKILL, output[-3000:]
    resumed_at = time.time()
    code, output = rel.finish(rel.start(spec, tmp_path, "--resume"))
    assert code == 0, output[-4000:]
    assert yaml.safe_load((sweep_dir / "sweep_spec.yaml").read_text())["scheduler_type"] == "moasha"

    by_lr = {s["config"]["sweep"]["params"]["lr_G"]: s for s in rel.summaries(sweep_dir).values()}
    assert sorted(by_lr) == sorted(LR_POINTS)
    slow = by_lr[1.0e-4]
    assert slow["status"] == "stopped early at step 10"
    assert all(a["started"] < resumed_at for a in slow["attempts"]), "the stopped trial was started again"
    # Every decision, before the kill and after it, is the rule's on the objectives recorded in arrival order:
    # the resumed scheduler had the rungs of the trials before it (saved with Tune's state, refilled from the study).
    replay, stopped_at = moasha(max_t=3), {}
    for lr in LR_POINTS:
        stopped_at[lr] = None
        for index, r in enumerate(by_lr[lr]["rounds"][:2], start=1):
            m = r["metrics"]
            if decide(replay, str(lr), index, m["val/PSNR"], m["val/LPIPS"], m["val/Final_Score"]) == "STOP":
                stopped_at[lr] = index
                break
    for lr, summary in by_lr.items():
        assert len(summary["rounds"]) == (stopped_at[lr] or 3), (lr, summary["status"], stopped_at)
        assert summary["status"] == ("completed" if stopped_at[lr] is None else
                                     f"stopped early at step {10 * stopped_at[lr]}"), lr
    records = rel.study_records(sweep_dir, "front")
    for summary in by_lr.values():
        frozen, rounds = records[summary["config"]["sweep"]["trial_id"]], summary["rounds"]
        assert sorted(map(int, frozen.user_attrs[ROUND_POINTS_ATTR])) == list(range(1, len(rounds) + 1))
        if summary["status"] == "completed":
            last = rounds[-1]["metrics"]
            assert frozen.state == optuna.trial.TrialState.COMPLETE
            assert frozen.values == pytest.approx([last["val/PSNR"], last["val/LPIPS"]])
        else:
            assert frozen.state == optuna.trial.TrialState.PRUNED


def test_a_pareto_sweep_started_before_moasha_resumes_with_the_asha_it_started_with(tmp_path, monkeypatch):
    from hypir_sweep import runner
    from hypir_sweep.spec import SPEC_COPY, spec_copy

    monkeypatch.chdir(tmp_path)
    spec = load_spec(pareto_spec(tmp_path))
    copy = spec_copy(spec)
    copy.pop("scheduler_type")  # what versions before this one wrote
    (tmp_path / spec.local_dir).mkdir(parents=True)
    (tmp_path / spec.local_dir / SPEC_COPY).write_text(yaml.safe_dump(copy))
    resumed = runner._resumed_scheduler(spec)
    assert resumed.scheduler.type == "asha"
    runner._check_unchanged(resumed)  # the older copy is no change
    copy["scheduler_type"] = "moasha"  # a sweep started by this version keeps its moasha
    (tmp_path / spec.local_dir / SPEC_COPY).write_text(yaml.safe_dump(copy))
    assert runner._resumed_scheduler(spec).scheduler.type == "moasha"
    runner._check_unchanged(spec)
