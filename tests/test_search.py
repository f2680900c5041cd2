"""What the sampler and the scheduler are told: real Optuna storage and Ray's own scheduler, no training."""

from __future__ import annotations

import pickle

import optuna
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from hypir_sweep.resume import ResumableASHA, SchedulerState
from hypir_sweep.search import ENDING, SweepSearch, is_final, newest_records

States = optuna.trial.TrialState
METRIC = "val/Final_Score"


def searcher(storage, name="s", **extra) -> SweepSearch:
    search = SweepSearch(metric=METRIC, mode="max", sampler=optuna.samplers.TPESampler(seed=0), study_name=name,
                         storage=storage, max_rounds=3, **extra)
    search.set_search_properties(METRIC, "max", {"lambda_l2": tune.uniform(0.5, 4.0)})
    return search


def report(search, trial_id, scores, complete=True, **ending):
    for round_number, score in enumerate(scores, start=1):
        search.on_trial_result(trial_id, {METRIC: score, "round": round_number})
    if complete:
        search.on_trial_complete(trial_id, result=ending or None)


def test_the_study_says_how_each_trial_ended(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = searcher(storage)
    for trial_id in "abcd":
        search.suggest(trial_id)
    report(search, "a", [20.0, 22.0, 21.5])                     # full budget
    report(search, "b", [19.0])                                 # stopped by the scheduler
    report(search, "c", [19.5, 20.0], **{ENDING: "diverged at step 25"})
    search.on_trial_complete("d", error=True)
    study = optuna.load_study(study_name="s", storage=storage)
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    # Complete with the best round (what the leaderboard ranks by), not the last one.
    assert by_id["a"].state == States.COMPLETE and by_id["a"].value == 22.0
    assert by_id["a"].intermediate_values == {1: 20.0, 2: 22.0, 3: 21.5}
    assert by_id["b"].state == States.PRUNED and by_id["b"].intermediate_values == {1: 19.0}
    assert by_id["c"].state == States.FAIL and by_id["c"].user_attrs["ending"] == "diverged at step 25"
    assert by_id["d"].state == States.FAIL
    # The config made c fail: the sampler learns it (a constraint); d crashed, which a retry may fix.
    assert by_id["c"].constraints == {"failed": 1.0} and by_id["d"].constraints == {}
    assert [t.state for t in study.trials if t.constraints] == [States.FAIL]


def test_tpe_learns_to_avoid_configs_that_diverged():
    """A score that rises with lr_G up to where training diverges: plain TPE never sees the failures and keeps
    proposing there; the sweep's sampler (search.learn_from_failures, the default) reads them as infeasible."""
    import math

    from hypir_sweep.failures import FailureAwareTPE, mark

    def failures(sampler_class, seed: int) -> int:
        study = optuna.create_study(direction="maximize", sampler=sampler_class(seed=seed, n_startup_trials=4))
        space = {"lr_G": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
                 "lambda_l2": optuna.distributions.FloatDistribution(0.0, 1.0)}
        count = 0
        for _ in range(30):
            trial = study.ask(space)
            if trial.params["lr_G"] > 1e-2:
                mark(trial, "diverged at step 5")
                study.tell(trial, state=States.FAIL)
                count += 1
            else:
                study.tell(trial, math.log10(trial.params["lr_G"]) - (trial.params["lambda_l2"] - 0.5) ** 2)
        assert all(t.state in (States.FAIL, States.COMPLETE) for t in study.trials)  # the study keeps the truth
        return count

    plain = sum(failures(optuna.samplers.TPESampler, seed) for seed in range(3))
    learned = sum(failures(FailureAwareTPE, seed) for seed in range(3))
    assert learned < plain / 2, (learned, plain)  # 3 seeds x 30 trials: 74 failures plain, 31 learned


def test_a_resumed_searcher_agrees_with_the_study(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = searcher(storage, points_to_evaluate=[{"lambda_l2": 2.0}])
    search.suggest("a")  # the warm start
    search.suggest("b")
    report(search, "a", [20.0], complete=False)
    snapshot = tmp_path / "searcher.pkl"
    search.save(str(snapshot))  # Tune's state snapshot, then the driver goes on and dies:
    report(search, "a", [20.0, 21.0], complete=False)
    search.on_trial_complete("a", result={METRIC: 21.0, "round": 2})  # the scheduler stopped it at round 2
    search.suggest("c")  # asked, never seen by the snapshot
    orphan = optuna.load_study(study_name="s", storage=storage).trials[-1].number

    resumed = searcher(storage)
    resumed.restore(str(snapshot))
    study = optuna.load_study(study_name="s", storage=storage)
    assert study.trials[orphan].state == States.FAIL
    # "a" ended (PRUNED at round 2) after the snapshot: the study says so, and the resumed sweep stops it
    # before it runs (hypir_sweep.resume); anything Tune still says of it is not told again.
    assert "a" in resumed.ended and "b" not in resumed.ended
    assert is_final(newest_records(study)["a"]) and not is_final(newest_records(study)["b"])
    report(resumed, "a", [20.0, 21.0, 22.0])
    report(resumed, "b", [18.0, 18.5, 19.0])
    study = optuna.load_study(study_name="s", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(States.RUNNING) == 0
    by_id = {t.user_attrs.get("ray_trial_id"): t for t in study.trials if t.state != States.FAIL}
    assert by_id["a"].state == States.PRUNED and by_id["a"].intermediate_values == {1: 20.0, 2: 21.0}
    assert by_id["b"].state == States.COMPLETE and by_id["b"].value == 19.0


def test_a_failed_trial_that_a_resume_completes_is_told_again(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = searcher(storage)
    search.suggest("a")
    report(search, "a", [20.0], complete=False)
    search.on_trial_complete("a", error=True)
    snapshot = tmp_path / "searcher.pkl"
    search.save(str(snapshot))
    resumed = searcher(storage)
    resumed.restore(str(snapshot))  # --resume restarts errored trials
    report(resumed, "a", [20.0, 21.0, 23.0])
    told = [t for t in optuna.load_study(study_name="s", storage=storage).trials
            if t.user_attrs.get("ray_trial_id") == "a"]
    assert [t.state for t in told] == [States.FAIL, States.COMPLETE] and told[-1].value == 23.0


def test_asha_keeps_its_rungs_across_a_resume():
    def trial(trial_id):
        return Trial("run_trial", trial_id=trial_id, stub=True)

    def asha():
        scheduler = ASHAScheduler(time_attr="round", metric=METRIC, mode="max", max_t=4, grace_period=1,
                                  reduction_factor=2)
        return scheduler

    before = asha()
    for trial_id, score in (("a", 25.0), ("b", 24.0), ("c", 26.0)):
        before.on_trial_add(None, trial(trial_id))
        before.on_trial_result(None, trial(trial_id), {"round": 1, METRIC: score})
    state = pickle.loads(pickle.dumps(SchedulerState(before).get_state()))

    after = asha()
    SchedulerState(after).set_state(state)
    late = trial("d")
    after.on_trial_add(None, late)
    # The restored rungs hold a, b, c: a weak newcomer is stopped at the first rung. A scheduler that
    # had forgotten them would let it go on (it would be the first result at that rung).
    assert after.on_trial_result(None, late, {"round": 1, METRIC: 20.0}) == TrialScheduler.STOP
    fresh = asha()
    fresh.on_trial_add(None, trial("d"))
    assert fresh.on_trial_result(None, trial("d"), {"round": 1, METRIC: 20.0}) == TrialScheduler.CONTINUE


def test_asha_gets_back_the_rung_values_its_snapshot_missed(tmp_path):
    # ASHA decided on "a" and "b" at round 1 and the study holds both; the snapshot was older and holds no
    # rung values at all. Refilled from the study, the rung stops a weak newcomer, as it would have.
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = searcher(storage)
    for trial_id, score in (("a", 25.0), ("b", 24.0)):
        search.suggest(trial_id)
        search.on_trial_result(trial_id, {METRIC: score, "round": 1})
    scheduler = ResumableASHA(time_attr="round", metric=METRIC, mode="max", max_t=4, grace_period=1,
                              reduction_factor=2)
    scheduler.refill(newest_records(optuna.load_study(study_name="s", storage=storage)))
    late = Trial("run_trial", trial_id="d", stub=True)
    scheduler.on_trial_add(None, late)
    assert scheduler.on_trial_result(None, late, {"round": 1, METRIC: 20.0}) == TrialScheduler.STOP
    # A trial recorded at the rung (it re-reports the round after a resume) goes on, as ASHA had decided.
    again = Trial("run_trial", trial_id="b", stub=True)
    scheduler.on_trial_add(None, again)
    assert scheduler.on_trial_result(None, again, {"round": 1, METRIC: 24.0}) == TrialScheduler.CONTINUE
    # What the resume machinery keeps on the scheduler is not saved as rung state.
    scheduler.watch_study("sqlite://", "s")
    assert not [k for k in SchedulerState(scheduler).get_state()["asha"] if k.startswith("_hypir")]


def test_a_pareto_study_holds_each_full_trial_at_its_last_round(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = SweepSearch(sampler=optuna.samplers.TPESampler(seed=0), study_name="front", storage=storage,
                         max_rounds=2, objectives=[("val/PSNR", "max"), ("val/LPIPS", "min")])
    # Tune hands the scheduler's scalar metric to the searcher: the objectives must stay.
    search.set_search_properties(METRIC, "max", {"lambda_l2": tune.uniform(0.5, 4.0)})
    points = {"sharp": (21.0, 0.20), "faithful": (23.0, 0.30), "dominated": (20.5, 0.31), "short": (30.0, 0.01)}
    for trial_id, (psnr, lpips) in points.items():
        search.suggest(trial_id)
        rounds = 1 if trial_id == "short" else 2
        for round_number in range(1, rounds + 1):
            search.on_trial_result(trial_id, {"val/PSNR": psnr, "val/LPIPS": lpips, METRIC: 0.0,
                                              "round": round_number})
        search.on_trial_complete(trial_id, result={})
    study = optuna.load_study(study_name="front", storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert by_id["short"].state == States.PRUNED  # stopped early: not comparable, not on the front
    assert by_id["faithful"].values == [23.0, 0.30]
    assert {t.user_attrs["ray_trial_id"] for t in study.best_trials} == {"sharp", "faithful"}


def test_a_trial_the_restored_searcher_never_asked_for_still_reaches_the_study(tmp_path):
    # Tune's experiment state and the searcher's are written one after the other: a driver killed
    # between them restores a trial (Tune runs it) whose ask the restored searcher never saw.
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = searcher(storage)
    search.suggest("a")
    snapshot = tmp_path / "searcher.pkl"
    search.save(str(snapshot))
    search.suggest("b")  # in Tune's snapshot, not in the searcher's
    resumed = searcher(storage)
    resumed.restore(str(snapshot))
    report(resumed, "a", [20.0, 21.0, 20.5])
    report(resumed, "b", [19.0, 22.5, 22.0])
    study = optuna.load_study(study_name="s", storage=storage)
    assert not [t for t in study.trials if t.state == States.RUNNING]
    done = {t.user_attrs["ray_trial_id"]: t for t in study.trials if t.state != States.FAIL}
    assert done["a"].value == 21.0
    assert done["b"].state == States.COMPLETE and done["b"].value == 22.5
    assert done["b"].intermediate_values == {1: 19.0, 2: 22.5, 3: 22.0}
    assert done["b"].params == next(t for t in study.trials if t.state == States.FAIL).params
