"""Failures the sampler learns from: a config that diverged, ran out of memory or was refused is infeasible.

Optuna's TPE models COMPLETE and PRUNED trials only; a FAIL trial is invisible to it (optuna/optuna
issues 1015, 1647), so a space with a diverging corner (a high ``lr_G``, a large ``lora_rank`` on a small
card) keeps being proposed and keeps costing a trial each time. Optuna's own remedy for a region that must
be avoided is a constraint: a trial whose constraint value is above 0 is infeasible, and TPE puts every
infeasible trial among its "bad" observations, so it proposes fewer configs near them (Optuna's
constrained TPE, single- and multi-objective alike).

Here a failure that the config itself caused (``diverged at step N``, ``out of memory at step N``,
``refused: ...``) gets the constraint ``failed = 1`` on its study record, which still says FAIL and why:
the study, analyze.py and the leaderboard keep telling the truth. ``FailureAwareTPE`` is Optuna's
``TPESampler`` that also reads those FAIL records as infeasible observations; a crash that a retry may fix
(``error``), an orphaned ask and a trial with no validation round stay unseen, as before.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import TrialState

FAILED = "failed"  # the constraint's name on a study record
CONFIG_FAILURES = ("diverged", "out of memory", "refused")  # endings the config caused (trial.py's wording)


def caused_by_config(reason: str | None) -> bool:
    """Whether a trial's ending says its config failed (rather than the machine, or an interruption)."""
    return bool(reason) and reason.startswith(CONFIG_FAILURES)


def mark(trial, reason: str | None) -> None:
    """Put the ``failed`` constraint on a live trial or a FrozenTrial about to be added, if the config failed."""
    if caused_by_config(reason) and FAILED not in trial_constraints(trial):
        trial.set_constraint(FAILED, 1.0)


def trial_constraints(trial) -> dict[str, float]:
    if isinstance(trial, optuna.trial.FrozenTrial):
        return trial.constraints
    return trial.study._storage.get_trial(trial._trial_id).constraints


def is_learned_failure(frozen) -> bool:
    """A FAIL record carrying the ``failed`` constraint."""
    return frozen.state == TrialState.FAIL and frozen.constraints.get(FAILED, 0.0) > 0


class _WithFailures:
    """The study as TPE reads it: its COMPLETE and PRUNED trials plus the failures the config caused."""

    def __init__(self, study: optuna.Study):
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False):
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        if states is None or TrialState.FAIL in states:
            return trials
        failed = [t for t in self._study._get_trials(deepcopy=deepcopy, states=(TrialState.FAIL,),
                                                     use_cache=use_cache) if is_learned_failure(t)]
        return sorted(trials + failed, key=lambda t: t.number) if failed else trials


class FailureAwareTPE(optuna.samplers.TPESampler):
    """Optuna's TPE, with the failures the config caused among its observations as infeasible trials.

    TPE reads its observations in ``_sample`` (its one call to ``study._get_trials`` for the model);
    handing it the study with those failures added is all that changes. Its random start-up draws and
    their count are Optuna's, unchanged.
    """

    def _sample(self, study, trial, search_space):
        return super()._sample(_WithFailures(study), trial, search_space)
