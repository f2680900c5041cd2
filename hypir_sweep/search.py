"""What the sampler and the scheduler know about a sweep, kept true across interruptions.

``SweepSearch`` is Ray's ``OptunaSearch`` with the bookkeeping a sweep needs:

- each trial's per-round values are reported to Optuna by validation round;
- a trial that ran the full budget is told COMPLETE with its best round (the value analyze.py ranks
  by); one the scheduler stopped early is PRUNED with its per-round values (a score after two rounds
  is not comparable with one after ten); one that diverged, ran out of memory or crashed is FAIL;
- after ``--resume``, Optuna trials that the interrupted driver asked for but Tune's last state
  snapshot never saw are failed (their warm-start points queued again), and nothing is told twice
  about a trial the study already holds as ended.

The study is written the moment a trial's end is decided; Tune's snapshot can be seconds older. So
the study is where a resumed sweep learns which trials ended (``newest_records``, ``is_final``):
hypir_sweep.resume stops those before any of them starts again.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper

from hypir_sweep.trial import ENDING, ROUND  # noqa: F401 (ROUND re-exported: the schedulers' time axis)

logger = logging.getLogger("hypir_sweep")
RAY_TRIAL_ATTR = "ray_trial_id"
ROUND_VALUES_ATTR = "round_values"  # Pareto sweeps: the scheduler's metric per round (the study holds no curve)
ERROR, ORPHANED = "error", "orphaned by an interrupted sweep"  # FAIL endings that --resume runs again / replaces


class SweepSearch(OptunaSearch):
    """OptunaSearch whose study says COMPLETE, PRUNED or FAIL as the trial actually ended (see module doc)."""

    def __init__(self, *args, max_rounds: int, objectives: list[tuple[str, str]] | None = None,
                 scheduler_metric: str | None = None, **kwargs):
        if objectives:  # a Pareto sweep: the study's directions are the objectives' modes
            kwargs.update(metric=[m for m, _ in objectives], mode=[d for _, d in objectives])
        super().__init__(*args, **kwargs)
        self.max_rounds = max_rounds
        self.objectives = list(objectives or [])
        self.scheduler_metric = scheduler_metric  # Pareto sweeps: what early stopping ranks by, kept per round
        self.values: dict[str, dict[int, float]] = {}  # Tune trial id -> {round: value}
        self.points: dict[str, tuple[int, list[float]]] = {}  # Pareto sweeps: trial -> (round, objective values)
        self.ended: set[str] = set()  # trials the study held as ended when the sweep was resumed
        self.orphans: dict[str, Any] = {}  # study records of trials Tune runs that this searcher never asked

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if self.objectives:  # Tune passes the scheduler's scalar metric; the study keeps its objectives
            metric = mode = None
        return super().set_search_properties(metric, mode, config, **spec)

    # ---- asking ------------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        params = super().suggest(trial_id)
        if params is not None:
            self._ot_trials[trial_id].set_user_attr(RAY_TRIAL_ATTR, trial_id)
        return params

    # ---- telling -----------------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials or trial_id in self.ended or ROUND not in result:
            return
        known = trial_id in self._ot_trials
        if not known and self._orphan(trial_id) is None:
            return
        if self.objectives:  # Optuna takes no per-round values with several objectives: keep the newest round
            if all(metric in result for metric, _ in self.objectives):
                self.points[trial_id] = (int(result[ROUND]), [float(result[m]) for m, _ in self.objectives])
            if known and self.scheduler_metric in result:
                self._keep_round_value(trial_id, int(result[ROUND]), float(result[self.scheduler_metric]))
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

    def _keep_round_value(self, trial_id: str, round_number: int, value: float) -> None:
        frozen = self._frozen(trial_id)
        kept = dict(frozen.user_attrs.get(ROUND_VALUES_ATTR) or {})
        if str(round_number) not in kept and math.isfinite(value) and not frozen.state.is_finished():
            kept[str(round_number)] = value
            self._ot_trials[trial_id].set_user_attr(ROUND_VALUES_ATTR, kept)

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
        self._ot_study.add_trial(optuna.trial.create_trial(
            state=state, values=_as_list(value) if state == _states().COMPLETE else None, params=frozen.params,
            distributions=frozen.distributions, intermediate_values={r: v for r, v in values.items()
                                                                    if math.isfinite(v)},
            user_attrs={**frozen.user_attrs, RAY_TRIAL_ATTR: trial_id, "supersedes": frozen.number,
                        "rounds": self._rounds(trial_id), **({"ending": reason} if reason else {})}))

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
        for trial_id, frozen in newest_records(study).items():
            if is_final(frozen):
                self.ended.add(trial_id)
        for trial_id in list(self._ot_trials):
            frozen = self._frozen(trial_id)
            if trial_id in self._completed_trials and frozen.state == states.FAIL and \
                    frozen.user_attrs.get("ending") == ERROR:
                self._completed_trials.discard(trial_id)  # --resume restarts errored trials: hear them again
            elif frozen.state.is_finished():
                self.values.setdefault(trial_id, {}).update(frozen.intermediate_values)


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
