"""Resuming a sweep: the Optuna study says which trials ended, Tune's snapshot says where the others stand.

The study records a trial's end the moment it is decided (hypir_sweep.search); Ray writes its
experiment snapshot at most every few seconds. After a killed driver the snapshot can therefore hold
as RUNNING a trial that the scheduler had already stopped, or one that had finished. On ``--resume``:

- ``check_snapshot`` makes sure Tune restores from a snapshot it can read: a damaged newest one is set
  aside (Ray would silently start the whole sweep over) and the one before it is used;
- ``settle_trial_folders`` brings each trial's ``summary.json`` and the study into agreement (a trial
  stopped early says so; one that trained on after an early stop, in a sweep run by an older version,
  is recorded as completed);
- the scheduler (the ``Resumable*`` classes, ``population_scheduler``) stops every restored trial that
  the study holds as ended before any trial starts, so none is trained again, and gives ASHA (and
  multi-objective ASHA) back the rung values it had not yet saved;
- ``SchedulerState`` saves what the scheduler knows with Tune's snapshot (ASHA's rungs; population-based
  training's per-trial times, scores and next synchronisation point).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import pickle
from typing import Any

from ray.tune import Callback
from ray.tune.experiment import Trial
from ray.tune.schedulers import (AsyncHyperBandScheduler, FIFOScheduler, HyperBandScheduler,
                                 MedianStoppingRule)

from hypir_core import checkpoint as ckpt
from hypir_sweep.moasha import MultiObjectiveASHA, losses_of
from hypir_sweep.search import (ROUND_POINTS_ATTR, ROUND_VALUES_ATTR, is_final, newest_records, round_points,
                                round_values)
from hypir_sweep.spec import SpecError

logger = logging.getLogger("hypir_sweep")
SNAPSHOT_FILES = ("experiment_state-{}.json", "searcher-state-{}.pkl", "search_gen_state-{}.json",
                  "callback-states-{}.pkl")
DAMAGED = ".damaged"


# ---- the snapshot Tune restores from -------------------------------------------------------------

def check_snapshot(experiment_dir: str) -> list[str]:
    """Set aside damaged newest state snapshots so Tune restores from the newest whole one; return a warning
    per snapshot set aside. Raises SpecError naming the file when no whole snapshot is left."""
    warnings: list[str] = []
    while True:
        sessions = sorted(os.path.basename(p)[len("experiment_state-"):-len(".json")]
                          for p in glob.glob(os.path.join(experiment_dir, "experiment_state-*.json")))
        if not sessions:
            return warnings
        newest = sessions[-1]
        broken = _damaged_file(experiment_dir, newest)
        if broken is None:
            return warnings
        if len(sessions) == 1:
            raise SpecError(f"The sweep's state snapshot {broken} is damaged and there is no earlier one to resume "
                            f"from; restore that file from a backup, or start the sweep anew under another name.")
        for template in SNAPSHOT_FILES:
            path = os.path.join(experiment_dir, template.format(newest))
            if os.path.exists(path):
                os.replace(path, path + DAMAGED)
        warnings.append(f"The sweep's newest state snapshot {broken} is damaged (set aside as {broken}{DAMAGED}); "
                        f"resuming from the one before it, and from the Optuna study for what came after.")


def _damaged_file(experiment_dir: str, session: str) -> str | None:
    """The first file of one snapshot that cannot be read back, or None when all of it reads."""
    for template in SNAPSHOT_FILES:
        path = os.path.join(experiment_dir, template.format(session))
        if not os.path.exists(path):
            if template.startswith("experiment_state"):
                return path
            continue
        try:
            with open(path, "rb") as handle:
                if template.startswith("experiment_state"):
                    json.load(handle)
                else:  # Ray pickles these (its search_gen_state ".json" too)
                    pickle.load(handle)
        except Exception:  # noqa: BLE001 - a truncated file fails in many ways, all of them mean "damaged"
            return path
    return None


# ---- trial folders and the study -----------------------------------------------------------------

def settle_trial_folders(sweep_dir: str, study, metric: str, mode: str, max_rounds: int,
                         objectives: list[str] | None = None) -> list[str]:
    """Make every trial's summary.json agree with the study before the sweep resumes; return what changed.

    A trial the study holds as stopped early at round k, whose summary still says it is running (the
    driver died as it stopped it), is marked ``stopped early at step S``. A trial that trained its full
    budget after the study recorded an early stop (possible in sweeps run by versions before this one)
    is recorded in the study as completed, so the study and the leaderboard agree.
    """
    import optuna

    from hypir_sweep.trial import SUMMARY, ended, read_summary

    states = optuna.trial.TrialState
    records = newest_records(study)
    changed = []
    for folder in sorted(glob.glob(os.path.join(sweep_dir, "trial_*"))):
        trial_id = os.path.basename(folder)[len("trial_"):]
        frozen, summary = records.get(trial_id), read_summary(folder)
        rounds, status = summary.get("rounds") or [], summary.get("status", "")
        if frozen is None or frozen.state != states.PRUNED or not rounds:
            continue
        if status == "completed" and len(rounds) >= max_rounds:
            curve = {index: r["metrics"][metric] for index, r in enumerate(rounds, start=1)}
            values = ([float(rounds[-1]["metrics"][name]) for name in objectives] if objectives
                      else [(max if mode == "max" else min)(curve.values())])
            study.add_trial(optuna.trial.create_trial(
                state=states.COMPLETE, values=values, params=frozen.params, distributions=frozen.distributions,
                intermediate_values={} if objectives else curve,
                user_attrs={**frozen.user_attrs, "supersedes": frozen.number, "rounds": len(rounds),
                            **({ROUND_VALUES_ATTR: {str(r): v for r, v in curve.items()},
                                ROUND_POINTS_ATTR: {str(i): [float(r["metrics"][name]) for name in objectives]
                                                    for i, r in enumerate(rounds, start=1)}} if objectives else {})}))
            changed.append(f"trial {trial_id} trained its full budget after an early stop: recorded as completed")
            continue
        stopped_at = int(frozen.user_attrs.get("rounds") or max(round_values(frozen), default=0))
        if not ended(status) and not status.startswith("stopped early") and 0 < stopped_at <= len(rounds):
            step = rounds[stopped_at - 1]["metrics"]["step"]
            summary.update(rounds=rounds[:stopped_at], status=f"stopped early at step {step}", steps=step)
            ckpt.write_json(os.path.join(folder, SUMMARY), summary)
            changed.append(f"trial {trial_id} was stopped early at round {stopped_at}")
    return changed


# ---- the scheduler on resume ---------------------------------------------------------------------

class SettleOnResume:
    """Scheduler mixin: before the first trial of this driver starts, stop every restored trial that the study
    holds as ended, and give the scheduler the rung values the study has and its restored state lacks."""

    def watch_study(self, storage: str, study_name: str) -> None:
        """Name the Optuna study whose records say which trials have ended."""
        self._hypir_study = (storage, study_name)

    def choose_trial_to_run(self, tune_controller):
        if not getattr(self, "_hypir_settled", False):
            self._hypir_settled = True
            self._settle(tune_controller)
        return super().choose_trial_to_run(tune_controller)

    def _settle(self, tune_controller) -> None:
        study = _load_study(getattr(self, "_hypir_study", None))
        if study is None:
            return
        records = newest_records(study)
        self.refill(records)
        for trial in list(tune_controller.get_trials()):
            frozen = records.get(trial.trial_id)
            if frozen is not None and trial.status in (Trial.PENDING, Trial.PAUSED) and is_final(frozen):
                logger.info("Trial %s ended before the sweep was interrupted (%s in the study): not run again.",
                            trial.trial_id, frozen.state.name)
                tune_controller.stop_trial(trial)

    def refill(self, records: dict[str, Any]) -> None:
        """Give the scheduler the per-round values of ``records`` that its restored state lacks (ASHA only)."""


class ResumableASHA(SettleOnResume, AsyncHyperBandScheduler):
    """ASHA that settles restored trials (SettleOnResume) and refills its rungs from the study."""

    def refill(self, records: dict[str, Any]) -> None:
        for trial_id, frozen in records.items():
            bracket = self._trial_info.get(trial_id) or (self._brackets[0] if len(self._brackets) == 1 else None)
            if bracket is None:
                continue
            values = round_values(frozen)
            for milestone, recorded in bracket._rungs:
                if trial_id not in recorded and milestone in values:
                    recorded[trial_id] = self._metric_op * values[milestone]


class ResumableMOASHA(SettleOnResume, MultiObjectiveASHA):
    """Multi-objective ASHA that settles restored trials (SettleOnResume) and refills its rungs from the objectives
    the study keeps per round."""

    def refill(self, records: dict[str, Any]) -> None:
        bracket = self._brackets[0]
        for trial_id, frozen in records.items():
            points = round_points(frozen)
            for milestone, recorded in bracket._rungs:
                if trial_id not in recorded and milestone in points:
                    recorded[trial_id] = losses_of(dict(zip((m for m, _ in self._objectives), points[milestone])),
                                                   self._objectives)


class ResumableHyperBand(SettleOnResume, HyperBandScheduler):
    """HyperBand that settles restored trials (SettleOnResume)."""


class ResumableMedianStopping(SettleOnResume, MedianStoppingRule):
    """Median stopping that settles restored trials (SettleOnResume)."""


class ResumableFIFO(SettleOnResume, FIFOScheduler):
    """FIFO that settles restored trials (SettleOnResume)."""


def _load_study(study_ref):
    if not study_ref:
        return None
    import optuna

    storage, name = study_ref
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:  # a sweep whose first trial has not been asked yet
        return None


# ---- what the scheduler knows, saved with Tune's snapshot ----------------------------------------

_PBT_FIELDS = ("last_score", "last_perturbation_time", "last_train_time", "last_result")


class SchedulerState(Callback):
    """Saves the scheduler's knowledge with Tune's experiment state; restores it on ``--resume``.

    ASHA (and multi-objective ASHA): its brackets and rungs. Population-based training: each trial's last
    score, train and perturbation times (by trial id: the restored trials are new objects) and the next
    synchronisation point, which Ray's PBT does not save (a synchronous population would otherwise wait
    forever).
    """

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def get_state(self) -> dict | None:
        from ray.tune.schedulers import AsyncHyperBandScheduler, PopulationBasedTraining

        scheduler = self.scheduler
        if isinstance(scheduler, AsyncHyperBandScheduler):
            return {"asha": {k: v for k, v in scheduler.__dict__.items() if not k.startswith("_hypir")}}
        if isinstance(scheduler, PopulationBasedTraining):
            return {"pbt": {"next_sync": scheduler._next_perturbation_sync,
                            "trials": {trial.trial_id: {name: getattr(state, name) for name in _PBT_FIELDS}
                                       for trial, state in scheduler._trial_state.items()}}}
        return None

    def set_state(self, state: dict) -> None:
        if "asha" in state:
            self.scheduler.__dict__.update(state["asha"])
            logger.info("Early stopping resumes with its rungs: %s", self.scheduler.debug_string())
        if "pbt" in state:
            self.scheduler._hypir_restored = state["pbt"]


def restore_pbt_trial(scheduler, trial) -> None:
    """Give a restored trial the population-based training state it had (called as the trial is added)."""
    saved = getattr(scheduler, "_hypir_restored", None)
    if not saved:
        return
    scheduler._next_perturbation_sync = saved["next_sync"]
    fields = saved["trials"].get(trial.trial_id)
    if fields and trial in scheduler._trial_state:
        for name, value in fields.items():
            setattr(scheduler._trial_state[trial], name, value)


def unstall_pbt(scheduler, tune_controller) -> None:
    """Synchronous PBT: when no trial runs and none may start (all wait for a synchronisation point that no
    live trial is still training towards), move the point on so the population goes on."""
    trials = tune_controller.get_trials()
    if any(t.status == Trial.RUNNING for t in trials):
        return
    waiting = [t for t in trials if t.status in (Trial.PENDING, Trial.PAUSED) and t in scheduler._trial_state]
    if not waiting:
        return
    times = [scheduler._trial_state[t].last_train_time for t in waiting]
    while min(times) >= scheduler._next_perturbation_sync:
        logger.info("Population-based training: no trial trains towards round %s; moving on.",
                    scheduler._next_perturbation_sync)
        scheduler._next_perturbation_sync += scheduler._perturbation_interval


__all__ = ["ROUND_VALUES_ATTR", "SchedulerState", "ResumableASHA", "ResumableFIFO", "ResumableHyperBand",
           "ResumableMOASHA", "ResumableMedianStopping", "check_snapshot", "settle_trial_folders", "restore_pbt_trial",
           "unstall_pbt"]
