"""Finalists confirmed over seeds: what the searcher asks, what each study records, what survives a resume.

Real Optuna storage, Ray's own ConcurrencyLimiter, SearchGenerator and ASHA; no training (the sweep end to
end, killed in its confirmation phase, is tests/test_trust_sweep.py).
"""

from __future__ import annotations

import optuna
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from hypir_sweep.confirm import ConfirmingASHA, SweepSearchGenerator, plan, study_name
from hypir_sweep.search import SweepSearch, newest_records

States = optuna.trial.TrialState
METRIC = "val/Final_Score"
BASE_SEED = 231


def searcher(storage, name="s", num_samples=3, confirm=(2, 2)) -> SweepSearch:
    search = SweepSearch(metric=METRIC, mode="max", sampler=optuna.samplers.TPESampler(seed=0), study_name=name,
                         storage=storage, max_rounds=3, num_samples=num_samples, confirm=confirm,
                         base_seed=BASE_SEED)
    search.set_search_properties(METRIC, "max", {"lambda_l2": tune.uniform(0.5, 4.0)})
    return search


def report(search, trial_id, scores, complete=True):
    for round_number, score in enumerate(scores, start=1):
        search.on_trial_result(trial_id, {METRIC: score, "round": round_number})
    if complete:
        search.on_trial_complete(trial_id, result=None)


def run_search(search):
    """Three search trials: a and c run the full budget (c best), b is stopped after one round."""
    params = {t: search.suggest(t) for t in "abc"}
    assert search.suggest("d") is None  # the search's three are running: the finalists are not known yet
    report(search, "a", [20.0, 22.0, 21.5])
    report(search, "b", [25.0], complete=False)
    search.on_trial_complete("b", result={METRIC: 25.0, "round": 1})
    assert search.suggest("d") is None  # c still runs
    report(search, "c", [21.0, 23.0, 22.5])
    return params


def confirm_records(storage, name="s"):
    study = optuna.load_study(study_name=study_name(name), storage=storage)
    return {t.user_attrs["ray_trial_id"]: t for t in study.trials}


def test_finalists_are_asked_with_new_seeds_once_the_search_has_ended(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = searcher(storage)
    params = run_search(search)
    asked = [search.suggest(t) for t in ("d", "e", "f", "g")]
    # The best full-budget configs, best first (b scored higher but was stopped early), each seed in turn.
    assert asked == [{**params["c"], "seed": 232}, {**params["a"], "seed": 232},
                     {**params["c"], "seed": 233}, {**params["a"], "seed": 233}]
    assert search.suggest("h") == Searcher.FINISHED
    report(search, "d", [21.5, 22.0, 21.0])
    search.on_trial_complete("e", error=True)
    # The search's study holds the search alone; the confirmation study one record per confirmation trial.
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3
    records = confirm_records(storage)
    assert {t: (r.user_attrs["confirms"], r.user_attrs["seed"]) for t, r in records.items()} == {
        "d": ("c", 232), "e": ("a", 232), "f": ("c", 233), "g": ("a", 233)}
    assert records["d"].state == States.COMPLETE and records["d"].value == 22.0
    assert records["d"].intermediate_values == {1: 21.5, 2: 22.0, 3: 21.0}
    assert records["e"].state == States.FAIL
    assert records["f"].state == States.RUNNING and records["f"].params == params["c"]


def test_a_config_the_search_ran_twice_is_one_finalist(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    distribution = {"lambda_l2": optuna.distributions.FloatDistribution(0.5, 4.0)}
    for number, (value, l2) in enumerate([(23.0, 1.0), (22.0, 1.0), (21.0, 2.0)]):
        study.add_trial(optuna.trial.create_trial(state=States.COMPLETE, values=[value], params={"lambda_l2": l2},
                                                  distributions=distribution, user_attrs={"ray_trial_id": f"t{number}"}))
    pairs = plan(newest_records(study), top=2, seeds=1, base_seed=BASE_SEED, mode="max")
    assert [(p.finalist, dict(p.params), p.seed) for p in pairs] == [("t0", {"lambda_l2": 1.0}, 232),
                                                                    ("t2", {"lambda_l2": 2.0}, 232)]


def test_a_resumed_confirmation_phase_neither_repeats_nor_skips_a_pair(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = searcher(storage)
    params = run_search(search)
    first = search.suggest("d")
    search.note_tune_trial("d", first)  # the scheduler names each trial Tune adds
    snapshot = tmp_path / "searcher.pkl"
    search.save(str(snapshot))  # Tune's snapshot; then the driver asks two more and dies:
    lost = search.suggest("e")
    search.note_tune_trial("e", lost)
    race = search.suggest("f")  # ...and Tune's snapshot (written before the searcher's) holds f

    resumed = searcher(storage)
    resumed.restore(str(snapshot))
    for trial_id, config in (("d", first), ("f", race)):  # what Tune restored, as it adds them again
        resumed.note_tune_trial(trial_id, config)
    again = [resumed.suggest(t) for t in ("e2", "g")]
    assert again == [lost, {**params["a"], "seed": 233}]  # e's pair (lost) again, then the one nobody asked
    assert resumed.suggest("h") == Searcher.FINISHED
    for trial_id in ("d", "f", "e2", "g"):
        report(resumed, trial_id, [20.0, 21.0, 20.5])
    records = confirm_records(storage)
    assert records["e"].state == States.FAIL and records["e"].user_attrs["ending"].startswith("orphaned")
    assert all(records[t].state == States.COMPLETE and records[t].value == 21.0 for t in ("d", "f", "e2", "g"))
    kept = {(r.user_attrs["confirms"], r.user_attrs["seed"]) for t, r in records.items() if t != "e"}
    assert kept == {("c", 232), ("a", 232), ("c", 233), ("a", 233)}


def test_confirm_on_an_ended_sweep_lets_tune_ask_for_more(tmp_path):
    """launch.py --confirm: the restored search generator counts the confirmation trials, the searcher fills them."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = searcher(storage, confirm=(0, 2))
    generator = SweepSearchGenerator(ConcurrencyLimiter(search, max_concurrent=2))
    generator._total_samples, generator._counter = 3, 3
    run_search(search)
    state = generator.get_state()
    generator.request_confirm(1, 2)
    generator.set_state(state)
    assert not generator.is_finished() and (search.confirm_top, search.confirm_seeds) == (1, 2)
    assert search.suggest("d")["seed"] == 232 and search.suggest("e")["seed"] == 233
    assert search.suggest("f") == Searcher.FINISHED


class _Trial:
    def __init__(self, trial_id, config):
        self.trial_id, self.config, self.status = trial_id, config, Trial.RUNNING


def test_the_scheduler_never_stops_a_confirmation_trial_and_tells_the_searcher_of_it(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    search = searcher(storage)
    scheduler = ConfirmingASHA(time_attr="round", metric=METRIC, mode="max", max_t=4, grace_period=1,
                               reduction_factor=2)
    scheduler.attach_searcher(search, seed_searched=False)
    strong, weak, confirming = _Trial("a", {"lambda_l2": 1.0}), _Trial("b", {"lambda_l2": 2.0}), \
        _Trial("c", {"lambda_l2": 1.0, "seed": 232})
    for trial in (strong, weak, confirming):
        scheduler.on_trial_add(None, trial)
    assert scheduler.on_trial_result(None, strong, {"round": 1, METRIC: 25.0}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, weak, {"round": 1, METRIC: 20.0}) == TrialScheduler.STOP
    assert scheduler.on_trial_result(None, confirming, {"round": 1, METRIC: 10.0}) == TrialScheduler.CONTINUE
    assert "c" not in scheduler._brackets[0]._rungs[-1][1]  # its scores do not move the search's cutoffs
    scheduler.on_trial_complete(None, confirming, {"round": 4, METRIC: 10.0})
    assert "c" in search.confirm_held and "a" not in search.confirm_held


# ---- the spec key and --confirm ------------------------------------------------------------------

def write_spec(tmp_path, **extra):
    import yaml

    from test_trust_sweep import ROOT

    spec = {"name": "c", "base_config": str(ROOT / "configs" / "tiny.yaml"),
            "space": {"lambda_l2": {"type": "uniform", "low": 0.5, "high": 4.0}}, "resources": {"gpu": 0},
            "storage_path": str(tmp_path / "sweeps"), **extra}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_confirm_settings_are_checked_against_the_rest_of_the_spec(tmp_path):
    import pytest

    from hypir_sweep.spec import SpecError, load_spec

    spec = load_spec(write_spec(tmp_path, confirm={"top": 3}))
    assert (spec.confirm.top, spec.confirm.seeds, spec.confirm_trials) == (3, 2, 6)
    assert load_spec(write_spec(tmp_path)).confirm_trials == 0
    refusals = [({"space": {"seed": {"type": "int", "low": 1, "high": 9}}}, "'seed' cannot be searched too"),
                ({"scheduler": {"type": "pbt", "hyperparam_mutations": {"lambda_l2": {
                    "type": "uniform", "low": 0.5, "high": 4.0}}}}, "population-based training"),
                ({"objectives": [{"metric": "val/PSNR"}, {"metric": "val/LPIPS"}]}, "a Pareto sweep"),
                ({"confirm": {"top": -1}}, "confirm.top")]
    for extra, message in refusals:
        with pytest.raises(SpecError, match=message):
            load_spec(write_spec(tmp_path, **{"confirm": {"top": 2}, **extra}))


def test_confirm_without_a_sweep_is_one_sentence(tmp_path):
    import pytest

    from hypir_sweep.runner import run_sweep
    from hypir_sweep.spec import SpecError

    with pytest.raises(SpecError, match="There is no sweep in .* to confirm the finalists of"):
        run_sweep(str(write_spec(tmp_path)), confirm=True)
