"""Finalists confirmed over seeds: after the search, its best full-budget configs train again with new seeds.

A spec's ``confirm: {top: 3, seeds: 2}`` (or ``launch.py SPEC --confirm`` on a sweep that has ended)
adds a confirmation phase to the sweep. Once every one of the search's ``num_samples`` trials has
ended, the searcher (``hypir_sweep.search.SweepSearch``) proposes the ``top`` best distinct
full-budget configs again, each with the base config's ``seed`` + 1, + 2, ... (the same new seeds
for every finalist, so they are compared on equal terms), until ``top * seeds`` such trials have
been asked. They are trials of the same Tune experiment: ``--resume``, retries, SwanLab and the
trial folders work for them as for any trial.

The Optuna study keeps them apart: they are recorded in a second study, ``<sweep>-confirm``, in the
same storage, never in the search's. So TPE never learns from a config run several times over
(it would weigh the finalists' region by repetition, not by evidence), parameter importance and
analyze.py's agreement between study and leaderboard cover the search alone, and the confirmation
records still say COMPLETE or FAIL exactly as the search's do (what ``--resume`` reads to stop
trials that had ended).

The scheduler never stops a confirmation trial nor compares it with the search's trials
(``ConfirmRunsFull``): each one trains the full budget, so its best round is comparable with its
finalist's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import SearchGenerator

from hypir_sweep.resume import (ResumableASHA, ResumableFIFO, ResumableHyperBand, ResumableMedianStopping,
                                ResumableMOASHA, _load_study)
from hypir_sweep.search import is_final, newest_records

SEED_KEY = "seed"  # the training config's key a confirmation trial sets (a search never samples it with confirm)
STUDY_SUFFIX = "-confirm"
FINALIST_ATTR, SEED_ATTR = "confirms", "seed"  # user attrs of a confirmation record: the search trial, the seed
DEFAULT_TOP = 3  # launch.py --confirm on a spec whose confirm.top is 0


def study_name(sweep_name: str) -> str:
    """The name of a sweep's confirmation study (beside the search's, in the same storage)."""
    return sweep_name + STUDY_SUFFIX


def params_key(params: dict[str, Any]) -> tuple:
    """A hashable identity of a config's sampled values (choices may be lists)."""
    return tuple((key, repr(params[key])) for key in sorted(params))


@dataclasses.dataclass(frozen=True)
class Pair:
    """One confirmation trial to run: a finalist's values (as the search study holds them) and a new seed."""

    finalist: str  # the search trial's Tune id
    params: tuple[tuple[str, Any], ...]
    seed: int

    @property
    def key(self) -> tuple:
        return params_key(dict(self.params)), self.seed


def plan(records: dict[str, Any], top: int, seeds: int, base_seed: int, mode: str) -> list[Pair]:
    """The confirmation trials of a search: its ``top`` best distinct COMPLETE configs times ``seeds`` new seeds.

    ``records`` are the search study's newest record per Tune trial (``search.newest_records``). Ties in
    value go to the earlier trial; a config the search ran twice is one finalist. Seeds are interleaved
    (every finalist's first new seed before any second one), so an interrupted phase has confirmed all.
    """
    import optuna

    completed = [f for f in records.values() if f.state == optuna.trial.TrialState.COMPLETE and f.values]
    completed.sort(key=lambda f: ((-f.values[0] if mode == "max" else f.values[0]), f.number))
    finalists, seen = [], set()
    for frozen in completed:
        identity = params_key(frozen.params)
        if identity in seen:
            continue
        seen.add(identity)
        finalists.append(frozen)
        if len(finalists) == top:
            break
    return [Pair(str(f.user_attrs.get("ray_trial_id")), tuple(sorted(f.params.items())), base_seed + offset)
            for offset in range(1, seeds + 1) for f in finalists]


def config_pair_key(config: dict, space_keys: list[str]) -> tuple | None:
    """The (values, seed) identity of a Tune trial's config if it is a confirmation trial's, else None."""
    if not isinstance(config, dict) or SEED_KEY not in config:
        return None
    return params_key({k: config.get(k) for k in space_keys}), int(config[SEED_KEY])


# ---- the confirmation study ----------------------------------------------------------------------

def open_study(storage, sweep_name: str, mode: str):
    """The sweep's confirmation study (made on first use): records only, nothing is sampled from it."""
    import optuna

    return optuna.create_study(study_name=study_name(sweep_name), storage=storage, load_if_exists=True,
                               direction="maximize" if mode == "max" else "minimize",
                               sampler=optuna.samplers.RandomSampler(seed=0))


def ask(study, trial_id: str, pair: Pair, distributions: dict[str, Any]):
    """Record a confirmation trial as asked (RUNNING) with its finalist's values, finalist and seed."""
    study.enqueue_trial(dict(pair.params), skip_if_exists=False)
    trial = study.ask(fixed_distributions={k: distributions[k] for k, _ in pair.params if k in distributions})
    for name, value in (("ray_trial_id", trial_id), (FINALIST_ATTR, pair.finalist), (SEED_ATTR, pair.seed)):
        trial.set_user_attr(name, value)
    return trial


def tell(study, trial, state, value, reason: str, rounds: int, round_values: dict[int, float]) -> None:
    """Record how a confirmation trial ended; a record that had ended already (an error that --resume ran
    again) gets a newer record beside it, as the search's do."""
    import optuna

    frozen = study._storage.get_trial(trial._trial_id)
    if not frozen.state.is_finished():
        if reason:
            trial.set_user_attr("ending", reason)
        trial.set_user_attr("rounds", rounds)
        study.tell(trial, value, state=state)
        return
    study.add_trial(optuna.trial.create_trial(
        state=state, values=[value] if state == optuna.trial.TrialState.COMPLETE else None, params=frozen.params,
        distributions=frozen.distributions,
        intermediate_values={r: v for r, v in round_values.items() if math.isfinite(v)},
        user_attrs={**frozen.user_attrs, "supersedes": frozen.number, "rounds": rounds,
                    **({"ending": reason} if reason else {})}))


def record_of(study, trial_id: str):
    """The newest confirmation record of a Tune trial, or None."""
    found = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("ray_trial_id") == trial_id]
    return max(found, key=lambda t: t.number) if found else None


# ---- Tune's side: the search generator and the scheduler ------------------------------------------

class SweepSearchGenerator(SearchGenerator):
    """Ray's SearchGenerator whose trial count grows when ``--confirm`` adds a confirmation phase to a sweep
    that has ended (Tune would otherwise restore the count it started with and ask for nothing more)."""

    def request_confirm(self, top: int, seeds: int) -> None:
        """Give the restored searcher these confirmation settings (applied as Tune restores its state)."""
        self._hypir_confirm_request = (top, seeds)

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        searcher = self.searcher
        while hasattr(searcher, "searcher"):
            searcher = searcher.searcher
        request = self.__dict__.pop("_hypir_confirm_request", None)
        if request is not None and hasattr(searcher, "set_confirm"):
            searcher.set_confirm(*request)
        more = getattr(searcher, "confirm_top", 0) * getattr(searcher, "confirm_seeds", 0)
        if more:  # an upper bound: the searcher says FINISHED once nothing is left to confirm
            self._total_samples = max(self._total_samples, self._counter + more)
            self._finished = False


class ConfirmRunsFull:
    """Scheduler mixin: confirmation trials train their full budget, apart from the search's rungs and brackets;
    every trial Tune holds is named to the searcher (which confirmation trials exist, after a resume too); on
    resume, confirmation trials the confirmation study holds as ended are stopped before any trial starts."""

    def attach_searcher(self, searcher, seed_searched: bool) -> None:
        """The sweep's searcher, told of every trial Tune adds; ``seed_searched``: seed is a search key."""
        self._hypir_searcher, self._hypir_seed_searched = searcher, seed_searched

    def _hypir_confirms(self, trial) -> bool:
        return not getattr(self, "_hypir_seed_searched", True) and SEED_KEY in (trial.config or {})

    def on_trial_add(self, tune_controller, trial) -> None:
        searcher = getattr(self, "_hypir_searcher", None)
        if searcher is not None and hasattr(searcher, "note_tune_trial"):
            searcher.note_tune_trial(trial.trial_id, trial.config)
        if not self._hypir_confirms(trial):
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self._hypir_confirms(trial):
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if not self._hypir_confirms(trial):
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial) -> None:
        if not self._hypir_confirms(trial):
            super().on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial) -> None:
        if not self._hypir_confirms(trial):
            super().on_trial_error(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        chosen = super().choose_trial_to_run(tune_controller)
        if chosen is not None:
            return chosen
        # HyperBand picks only trials of its brackets, where confirmation trials are not.
        return next((t for t in tune_controller.get_trials() if t.status == Trial.PENDING and self._hypir_confirms(t)),
                    None)

    def _settle(self, tune_controller) -> None:
        super()._settle(tune_controller)
        ref = getattr(self, "_hypir_study", None)
        study = _load_study((ref[0], study_name(ref[1])) if ref else None)
        if study is None:
            return
        records = newest_records(study)
        for trial in list(tune_controller.get_trials()):
            frozen = records.get(trial.trial_id)
            if frozen is not None and trial.status in (Trial.PENDING, Trial.PAUSED) and is_final(frozen):
                tune_controller.stop_trial(trial)


class ConfirmingASHA(ConfirmRunsFull, ResumableASHA):
    """ResumableASHA; confirmation trials run their full budget, outside its rungs."""


class ConfirmingMOASHA(ConfirmRunsFull, ResumableMOASHA):
    """ResumableMOASHA, told of every trial like the others (a Pareto sweep confirms no finalists)."""


class ConfirmingHyperBand(ConfirmRunsFull, ResumableHyperBand):
    """ResumableHyperBand; confirmation trials run their full budget, outside its brackets."""


class ConfirmingMedianStopping(ConfirmRunsFull, ResumableMedianStopping):
    """ResumableMedianStopping; confirmation trials run their full budget and do not move its medians."""


class ConfirmingFIFO(ConfirmRunsFull, ResumableFIFO):
    """ResumableFIFO, told of confirmation trials like the others."""


# ---- the end of a sweep --------------------------------------------------------------------------

def expected_trials(spec) -> int:
    """How many confirmation trials a finished sweep holds: its plan's length (0 without confirmation)."""
    if not spec.confirm.top or spec.scheduler.population_based:
        return 0
    import optuna

    try:
        study = optuna.load_study(study_name=spec.name, storage=spec.optuna_storage)
    except KeyError:
        return 0
    return len(plan(newest_records(study), spec.confirm.top, spec.confirm.seeds, spec.base.seed, spec.mode))


def prune(spec, sweep, prune_weights) -> list[str]:
    """Keep the weights of the leaderboard's top ``keep_top_k`` and of every finalist (the exported config may be
    the best by mean); remove the confirmation trials' (extra seeds of a finalist whose search trial keeps its)."""
    keep = max(spec.keep_top_k, spec.confirm.top)
    pruned = prune_weights(dataclasses.replace(spec, keep_top_k=keep), sweep)
    if sweep.confirm_rows:
        pruned += prune_weights(dataclasses.replace(spec, keep_top_k=0), dataclasses.replace(
            sweep, rows=sweep.confirm_rows, confirm_rows=[]))
    return sorted(set(pruned))


def print_finalists(spec, sweep) -> None:
    """Print the finalists' ranking by mean at the end of a sweep, and where analyze.py exports it."""
    from hypir_core.terminal import make_console
    from hypir_sweep.finalists import summary_lines

    lines = summary_lines(sweep)
    console = make_console()
    for line in lines:
        console.print(line, soft_wrap=True)
    if lines:
        console.print(f"analyze.py exports the best by mean: python analyze.py {spec.sweep_dir}")
