"""What the sampler and the scheduler know about a sweep, kept true across interruptions.

``SweepSearch`` is Ray's ``OptunaSearch`` with the bookkeeping a sweep needs:

- each trial's per-round values are reported to Optuna by validation round;
- a trial that ran the full budget is told COMPLETE with its best round (the value analyze.py ranks
  by); one the scheduler stopped early is PRUNED with its per-round values (a score after two rounds
  is not comparable with one after ten); one that diverged, ran out of memory or crashed is FAIL, and
  one whose config caused the failure also carries a constraint the sampler learns from
  (hypir_sweep.failures);
- after ``--resume``, Optuna trials that the interrupted driver asked for but Tune's last state
  snapshot never saw are failed (their warm-start points queued again), nothing is told twice
  about a trial the study already holds as ended, and a trial that ended after that snapshot counts
  towards ``num_samples`` (Tune restores without it and would otherwise ask for one more).

The study is written the moment a trial's end is decided; Tune's snapshot can be seconds older. So
the study is where a resumed sweep learns which trials ended (``newest_records``, ``is_final``):
hypir_sweep.resume stops those before any of them starts again.

With ``confirm`` (hypir_sweep.confirm), once the search's ``num_samples`` trials have all ended the
searcher proposes its finalists again with new seeds, recorded in the study ``<name>-confirm``; which of
them exist is what Tune holds (the scheduler names every trial it adds, ``note_tune_trial``), so a
resumed sweep neither repeats nor skips one.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper

from hypir_sweep import failures
from hypir_sweep.trial import ENDING, ROUND  # noqa: F401 (ROUND re-exported: the schedulers' time axis)

logger = logging.getLogger("hypir_sweep")
RAY_TRIAL_ATTR = "ray_trial_id"
ROUND_VALUES_ATTR = "round_values"  # Pareto sweeps: the scheduler's metric per round (the study holds no curve)
ROUND_POINTS_ATTR = "round_objectives"  # Pareto sweeps: the objectives per round (what MOASHA's rungs hold)
ERROR, ORPHANED = "error", "orphaned by an interrupted sweep"  # FAIL endings that --resume runs again / replaces


class SweepSearch(OptunaSearch):
    """OptunaSearch whose study says COMPLETE, PRUNED or FAIL as the trial actually ended (see module doc)."""

    def __init__(self, *args, max_rounds: int, objectives: list[tuple[str, str]] | None = None,
                 scheduler_metric: str | None = None, num_samples: int | None = None,
                 confirm: tuple[int, int] = (0, 0), base_seed: int = 0, **kwargs):
        if objectives:  # a Pareto sweep: the study's directions are the objectives' modes
            kwargs.update(metric=[m for m, _ in objectives], mode=[d for _, d in objectives])
        super().__init__(*args, **kwargs)
        self.max_rounds = max_rounds
        self.objectives = list(objectives or [])
        self.scheduler_metric = scheduler_metric  # Pareto sweeps: what early stopping ranks by, kept per round
        self.values: dict[str, dict[int, float]] = {}  # Tune trial id -> {round: value}
        self.points: dict[str, tuple[int, list[float]]] = {}  # Pareto sweeps: trial -> (round, objective values)
        self.ended: set[str] = set()  # trials the study held as ended when the sweep was resumed
        self.search_ended: set[str] = set()  # those of the search's study (not the confirmation's)
        self.orphans: dict[str, Any] = {}  # study records of trials Tune runs that this searcher never asked
        # The confirmation phase: after ``num_samples`` search trials (None: no limit of ours, no phase).
        self.search_samples, self.base_seed = num_samples, base_seed
        self.confirm_top, self.confirm_seeds = confirm
        self.confirm_plan: list | None = None  # the pairs to run, fixed once the search has ended
        self.confirm_records: dict[str, Any] = {}  # Tune trial id -> its optuna.Trial in the confirmation study
        self.confirm_held: dict[str, tuple] = {}  # Tune trial id -> pair key, for every confirmation trial Tune holds
        self._confirm_study = None
        self._lost_asks_failed = False

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if self.objectives:  # Tune passes the scheduler's scalar metric; the study keeps its objectives
            metric = mode = None
        return super().set_search_properties(metric, mode, config, **spec)

    # ---- asking ------------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | str | None:
        limit = getattr(self, "search_samples", None)
        # Trials that ended in the study after Tune's last snapshot (the driver died in between) count too:
        # Tune restores without them, so its count of trials is short by as many.
        if limit is not None and len(set(self._ot_trials) | getattr(self, "search_ended", set())) >= limit:
            if not all(t in self._completed_trials or t in self.ended for t in self._ot_trials):
                return None  # "not yet": the finalists are known once every search trial has ended
            return self._suggest_confirmation(trial_id)
        params = super().suggest(trial_id)
        if params is not None:
            self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ATTR, trial_id)
        return params

    def set_confirm(self, top: int, seeds: int) -> None:
        """Confirm ``top`` finalists with ``seeds`` new seeds each (``launch.py --confirm`` on a restored sweep)."""
        if (top, seeds) != (self.confirm_top, self.confirm_seeds):
            self.confirm_top, self.confirm_seeds, self.confirm_plan = top, seeds, None

    def note_tune_trial(self, trial_id: str, config: dict) -> None:
        """Tune holds this trial (told by the scheduler as each is added, restored ones included)."""
        from hypir_sweep import confirm

        pair = confirm.config_pair_key(config, list(self._space or {}))
        if pair is None or not self.confirm_top and not self.confirm_records:
            return
        self.confirm_held[trial_id] = pair
        if trial_id not in self.confirm_records:  # asked by a driver whose searcher snapshot was older
            frozen = confirm.record_of(self._confirmation_study(), trial_id)
            if frozen is not None and not frozen.state.is_finished():
                import optuna

                self.confirm_records[trial_id] = optuna.trial.Trial(self._confirmation_study(), frozen._trial_id)

    def _suggest_confirmation(self, trial_id: str) -> dict | str:
        from ray.tune.utils.util import unflatten_dict

        from hypir_sweep import confirm

        if not self.confirm_top:
            return Searcher.FINISHED
        study = self._confirmation_study()
        if not self._lost_asks_failed:
            # Asked by an interrupted driver after Tune's last snapshot: Tune will never run them.
            self._lost_asks_failed = True
            for frozen in study.get_trials(deepcopy=False, states=(_states().RUNNING,)):
                if frozen.user_attrs.get(RAY_TRIAL_ATTR) not in self.confirm_held:
                    study._storage.set_trial_user_attr(frozen._trial_id, "ending", ORPHANED)
                    study._storage.set_trial_state_values(frozen._trial_id, _states().FAIL)
        if self.confirm_plan is None:
            self.confirm_plan = confirm.plan(newest_records(self._ot_study), self.confirm_top, self.confirm_seeds,
                                             self.base_seed, self.mode)
        held = set(self.confirm_held.values())
        pair = next((p for p in self.confirm_plan if p.key not in held), None)
        if pair is None:
            return Searcher.FINISHED
        self.confirm_records[trial_id] = confirm.ask(study, trial_id, pair, self._space or {})
        self.confirm_held[trial_id] = pair.key
        return {**unflatten_dict(dict(pair.params)), confirm.SEED_KEY: pair.seed}

    def _confirmation_study(self):
        if getattr(self, "_confirm_study", None) is None:
            from hypir_sweep import confirm

            self._confirm_study = confirm.open_study(self._ot_study._storage, self._ot_study.study_name, self.mode)
        return self._confirm_study

    def _is_confirmation(self, trial_id: str) -> bool:
        return trial_id in getattr(self, "confirm_held", {}) or trial_id in getattr(self, "confirm_records", {})

    # ---- telling -----------------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id in self.ended or ROUND not in result:
            return
        if self._is_confirmation(trial_id):
            self._confirmation_result(trial_id, result)
            return
        known = trial_id in self._ot_trials
        if not known and self._orphan(trial_id) is None:
            return
        if self.objectives:  # Optuna takes no per-round values with several objectives: keep the newest round
            round_number = int(result[ROUND])
            if all(metric in result for metric, _ in self.objectives):
                point = [float(result[m]) for m, _ in self.objectives]
                self.points[trial_id] = (round_number, point)
                if known and all(math.isfinite(v) for v in point):
                    self._keep_per_round(trial_id, ROUND_POINTS_ATTR, round_number, point)
            if known and self.scheduler_metric in result and math.isfinite(float(result[self.scheduler_metric])):
                self._keep_per_round(trial_id, ROUND_VALUES_ATTR, round_number, float(result[self.scheduler_metric]))
            return
        if self.metric not in result:
            return
        value, round_number = float(result[self.metric]), int(result[ROUND])
        self.values.setdefault(trial_id, {})[round_number] = value
        if not known:  # its study record was failed as an orphan: the values go into a copy when it ends
            return
        frozen = self._frozen(trial_id)
        # A round trained again after a resume was reported before the interruption: once is enough.
        if math.isfinite(value) and not frozen.state.is_finished() and round_number not in frozen.intermediate_values:
            self._ot_trials[trial_id].report(value, round_number)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self._completed_trials:
            return
        if trial_id in self.ended:  # it ended before the sweep was resumed; the study says how
            self._completed_trials.add(trial_id)
            return
        if self._is_confirmation(trial_id):
            self._confirmation_result(trial_id, result or {})
            self._completed_trials.add(trial_id)
            record = self.confirm_records.get(trial_id)
            if record is not None:
                from hypir_sweep import confirm

                state, value, reason = self.outcome(trial_id, result, error)
                confirm.tell(self._confirmation_study(), record, state, value, reason, self._rounds(trial_id),
                             self.values.get(trial_id, {}))
            return
        if trial_id not in self._ot_trials:
            orphan = self._orphan(trial_id)
            if orphan is not None:  # Tune ran a trial that the restored searcher never knew: record it
                self.on_trial_result(trial_id, result or {})
                self._completed_trials.add(trial_id)
                self._add_copy(trial_id, orphan, *self.outcome(trial_id, result, error))
            return
        # When the scheduler stops a trial on a result, Tune hands that result only to this call.
        self.on_trial_result(trial_id, result or {})
        self._completed_trials.add(trial_id)
        state, value, reason = self.outcome(trial_id, result, error)
        frozen = self._frozen(trial_id)
        if not frozen.state.is_finished():
            trial = self._ot_trials[trial_id]
            if reason:
                trial.set_user_attr("ending", reason)
                failures.mark(trial, reason)
            trial.set_user_attr("rounds", self._rounds(trial_id))
            self._ot_study.tell(trial, value, state=state)
            if state == _states().PRUNED:  # the decision is on record: the moment a killed driver may lose
                from hypir_core import faults

                faults.fire("pruned", int((result or {}).get("step", 0)))
        elif frozen.state != state or (state == _states().COMPLETE and _values(frozen) != _as_list(value)):
            # Finished in the study already (a failure before --resume restarted it): record the
            # new outcome as a trial of its own, so the sampler learns it; analyze.py reads the newest.
            self._add_copy(trial_id, frozen, state, value, reason)

    def outcome(self, trial_id: str, result: dict | None, error: bool) -> tuple[Any, Any, str]:
        """(Optuna state, value, reason) for a trial that Tune says has ended.

        A full-budget trial's value is its best round (what the leaderboard ranks by); with several
        objectives, the objectives of its last round (what its final weights give).
        """
        states = _states()
        ending = (result or {}).get(ENDING) or ""
        if error:
            return states.FAIL, None, "error"
        if self.objectives:
            round_number, point = self.points.get(trial_id, (0, []))
            if ending or not point or not all(math.isfinite(v) for v in point):
                return states.FAIL, None, ending or "no validation round"
            if round_number >= self.max_rounds:
                return states.COMPLETE, point, ""
            return states.PRUNED, None, "stopped early"
        values = self.values.get(trial_id, {})
        finite = [v for v in values.values() if math.isfinite(v)]
        if ending or not finite:
            return states.FAIL, None, ending or "no validation round"
        if max(values) >= self.max_rounds:
            return states.COMPLETE, (max if self.mode == "max" else min)(finite), ""
        return states.PRUNED, None, "stopped early"

    def _confirmation_result(self, trial_id: str, result: dict) -> None:
        if self.metric not in result or ROUND not in result:
            return
        value, round_number = float(result[self.metric]), int(result[ROUND])
        self.values.setdefault(trial_id, {})[round_number] = value
        record = self.confirm_records.get(trial_id)
        if record is None:
            return
        frozen = self._confirmation_study()._storage.get_trial(record._trial_id)
        if math.isfinite(value) and not frozen.state.is_finished() and round_number not in frozen.intermediate_values:
            record.report(value, round_number)

    def _keep_per_round(self, trial_id: str, attr: str, round_number: int, value) -> None:
        """Keep a Pareto trial's round in the study's user attribute ``attr`` (once, while the trial runs)."""
        frozen = self._frozen(trial_id)
        kept = dict(frozen.user_attrs.get(attr) or {})
        if str(round_number) not in kept and not frozen.state.is_finished():
            kept[str(round_number)] = value
            self._ot_trials[trial_id].set_user_attr(attr, kept)

    def _rounds(self, trial_id: str) -> int:
        if self.objectives:
            return self.points.get(trial_id, (0, []))[0]
        return max(self.values.get(trial_id, {0: 0}))

    def _orphan(self, trial_id: str):
        """The study's record of a trial that Tune runs but this (restored) searcher does not know, or None.

        Tune's experiment state and the searcher's are two files of one snapshot: a driver killed
        between them restores a trial whose ask the searcher never saw, and ``reconcile`` fails its
        record as orphaned. Its outcome is then added as a trial of its own when it ends.
        """
        if trial_id not in self.orphans:
            found = [t for t in self._ot_study.get_trials(deepcopy=False)
                     if t.user_attrs.get(RAY_TRIAL_ATTR) == trial_id]
            self.orphans[trial_id] = found[-1] if found else None
        return self.orphans[trial_id]

    def _frozen(self, trial_id: str):
        trial = self._ot_trials[trial_id]
        return self._ot_study._storage.get_trial(trial._trial_id)

    def _add_copy(self, trial_id: str, frozen, state, value, reason: str) -> None:
        import optuna

        values = {} if self.objectives else self.values.get(trial_id, {})
        copy = optuna.trial.create_trial(
            state=state, values=_as_list(value) if state == _states().COMPLETE else None, params=frozen.params,
            distributions=frozen.distributions, intermediate_values={r: v for r, v in values.items()
                                                                    if math.isfinite(v)},
            user_attrs={**frozen.user_attrs, RAY_TRIAL_ATTR: trial_id, "supersedes": frozen.number,
                        "rounds": self._rounds(trial_id), **({"ending": reason} if reason else {})})
        failures.mark(copy, reason)
        self._ot_study.add_trial(copy)

    # ---- resume ------------------------------------------------------------------------------
    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.reconcile()

    def reconcile(self) -> None:
        """Make the restored searcher agree with the study, which kept changing after the last snapshot."""
        states = _states()
        study = self._ot_study
        known = {trial._trial_id for trial in self._ot_trials.values()}
        for frozen in study.get_trials(deepcopy=False, states=(states.RUNNING,)):
            if frozen._trial_id in known:
                continue
            # Asked by the interrupted driver after the snapshot: Tune will never run it.
            study._storage.set_trial_user_attr(frozen._trial_id, "ending", ORPHANED)
            study._storage.set_trial_state_values(frozen._trial_id, states.FAIL)
            if "fixed_params" in frozen.system_attrs:
                study.enqueue_trial(frozen.system_attrs["fixed_params"], skip_if_exists=False)
        self.search_ended = {trial_id for trial_id, frozen in newest_records(study).items() if is_final(frozen)}
        self.ended |= self.search_ended
        for trial_id in list(self._ot_trials):
            frozen = self._frozen(trial_id)
            if trial_id in self._completed_trials and frozen.state == states.FAIL and \
                    frozen.user_attrs.get("ending") == ERROR:
                self._completed_trials.discard(trial_id)  # --resume restarts errored trials: hear them again
            elif frozen.state.is_finished():
                self.values.setdefault(trial_id, {}).update(frozen.intermediate_values)
        self._reconcile_confirmation()

    def _reconcile_confirmation(self) -> None:
        """The confirmation study's side of ``reconcile``: which confirmation trials ended, which run again."""
        # Which confirmation trials exist is what this driver's Tune holds: the scheduler says so as it adds them.
        self.confirm_held, self._lost_asks_failed = {}, False
        self.confirm_records = dict(getattr(self, "confirm_records", {}))
        if not (getattr(self, "confirm_top", 0) or self.confirm_records):
            return
        for trial_id, frozen in newest_records(self._confirmation_study()).items():
            if is_final(frozen):
                self.ended.add(trial_id)
            elif frozen.state == _states().FAIL and frozen.user_attrs.get("ending") == ERROR:
                self._completed_trials.discard(trial_id)  # --resume restarts errored trials


def newest_records(study) -> dict[str, Any]:
    """The study's newest record of each Tune trial (a trial recorded again after a resume has several)."""
    newest: dict[str, Any] = {}
    for frozen in study.get_trials(deepcopy=False):
        trial_id = frozen.user_attrs.get(RAY_TRIAL_ATTR)
        if trial_id is not None and (trial_id not in newest or frozen.number > newest[trial_id].number):
            if frozen.user_attrs.get("ending") != ORPHANED:
                newest[trial_id] = frozen
    return newest


def is_final(frozen) -> bool:
    """Whether a study record says its trial is over for good: completed, stopped early, diverged, out of
    memory or refused. An errored trial is not (``--resume`` runs it again), nor one still running."""
    states = _states()
    if frozen.state in (states.COMPLETE, states.PRUNED):
        return True
    return frozen.state == states.FAIL and frozen.user_attrs.get("ending") not in (None, ERROR, ORPHANED)


def round_values(frozen) -> dict[int, float]:
    """The scheduler's metric at each round a study record holds (its curve; a Pareto sweep keeps it apart)."""
    kept = frozen.user_attrs.get(ROUND_VALUES_ATTR)
    if kept:
        return {int(r): float(v) for r, v in kept.items()}
    return {int(r): float(v) for r, v in frozen.intermediate_values.items()}


def round_points(frozen) -> dict[int, list[float]]:
    """A Pareto sweep's objectives at each round a study record holds (what MOASHA's rungs are refilled from)."""
    kept = frozen.user_attrs.get(ROUND_POINTS_ATTR) or {}
    return {int(r): [float(v) for v in values] for r, values in kept.items()}


def _as_list(value) -> list[float] | None:
    return None if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _values(frozen) -> list[float] | None:
    return list(frozen.values) if frozen.values is not None else None


def _states():
    import optuna

    return optuna.trial.TrialState


class EndedTrialStopper(Stopper):
    """Stops nothing. Sweeps started by earlier versions hold one in Tune's snapshot, which must still load;
    trials that ended before an interruption are now stopped by hypir_sweep.resume."""

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return False
