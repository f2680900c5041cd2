"""Earlier sweeps as the sampler's first observations: ``search.warm_start: [sweep_results/loss_weights]``.

Users sweep in stages (loss weights, then learning rates, then model_t). With ``warm_start`` the new
sweep's Optuna study starts with the ended trials of the earlier ones, so TPE models from its first
proposal instead of drawing ``n_startup_trials`` configs at random. Taken from each earlier study, its
newest record of every trial: COMPLETE (its best round), PRUNED (its rounds: what ASHA stopped), and the
failures the config caused (hypir_sweep.failures, a constraint). Each is added as a record of its own
(user attribute ``warm_start_from``: the sweep and trial it copies), with no Tune trial behind it: the
leaderboard, the confirmation phase and ``--resume`` never see it.

An earlier trial fits the new space when its training config is one the new sweep could run:

- a key the new sweep searches takes the earlier trial's value (searched there, or the earlier base
  config's value); a value outside the new space leaves the trial out;
- a key the earlier sweep searched but the new one fixes must have the value the new base config fixes;
  otherwise the trial is left out. It measured another config, and giving it to TPE as one of these
  would tell it of a score no config of this sweep reaches (to carry those trials over, keep the key in
  the space, narrowed to where the earlier sweep looked best).

The scores must mean the same: the same metric and mode (objectives for a Pareto sweep), and the same
number of validation rounds; otherwise the earlier sweep is refused in one sentence, and so is one
that has no fitting trial.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hypir_core.config import config_from_dict, validation_rounds
from hypir_core.errors import ConfigError
from hypir_core.schedule import read

WARM_START_ATTR = "warm_start_from"


@dataclass
class Earlier:
    """One earlier sweep, as far as this sweep can learn from it."""

    folder: str
    name: str
    records: list = field(default_factory=list)  # optuna FrozenTrials to add, in the new space
    left_out: dict[str, int] = field(default_factory=dict)  # reason -> trials

    def summary(self) -> str:
        kinds: dict[str, int] = {}
        for record in self.records:
            kinds[record.state.name.lower()] = kinds.get(record.state.name.lower(), 0) + 1
        counts = ", ".join(f"{n} {k}" for k, n in kinds.items())
        text = f"{len(self.records)} trials from sweep '{self.name}' ({counts})"
        if self.left_out:
            text += "; left out: " + "; ".join(f"{n} {why}" for why, n in self.left_out.items())
        return text


def earlier_sweeps(spec, refuse) -> list[Earlier]:
    """Every ``search.warm_start`` folder read against ``spec``; ``refuse(sentence)`` raises for one that cannot be
    used (a missing folder, scores that mean something else, no trial that fits)."""
    return [read_earlier(folder, spec, refuse) for folder in spec.search.warm_start]


def read_earlier(folder: str, spec, refuse) -> Earlier:
    import optuna

    from hypir_sweep.search import ERROR, ORPHANED, newest_records
    from hypir_sweep.spec import SPEC_COPY

    copy_path = Path(folder) / SPEC_COPY
    where = f"'search.warm_start' in {os.path.basename(spec.source)} names '{folder}'"
    if not copy_path.is_file():
        refuse(f"{where}, which holds no {SPEC_COPY}; give the folder of an earlier sweep (sweep_results/<name>).")
    earlier = yaml.safe_load(copy_path.read_text()) or {}
    name = earlier.get("name") or Path(folder).name
    base = earlier.get("base_resolved") or {}
    mine = ([(o.metric, o.mode) for o in spec.objectives] or [(spec.metric, spec.mode)])
    theirs = ([(o["metric"], o.get("mode") or _mode(o["metric"])) for o in earlier.get("objectives") or []]
              or [(earlier.get("metric"), earlier.get("mode") or _mode(earlier.get("metric") or ""))])
    if mine != theirs:
        refuse(f"{where}, which ranked trials by {_said(theirs)}; this sweep ranks by {_said(mine)}, so its scores "
               f"would mean something else: warm-start from a sweep with the same metric and mode.")
    rounds = validation_rounds(base["max_train_steps"], base["validation_steps"])
    if rounds != spec.max_rounds:
        refuse(f"{where}, whose trials ran {rounds} validation rounds; this sweep's run {spec.max_rounds}, so a "
               f"best round there is not one here: warm-start from a sweep with the same max_train_steps and "
               f"validation_steps.")
    storage = (earlier.get("search") or {}).get("optuna_storage") or \
        f"sqlite:///{os.path.abspath(os.path.join(folder, 'optuna.db'))}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except (KeyError, ValueError, ImportError) as exc:
        refuse(f"{where}, whose Optuna study '{name}' cannot be read from {storage} ({exc}); is the sweep's "
               f"optuna.db there?")
    found = Earlier(folder=folder, name=name)
    their_cfg = config_from_dict(base, source=f"sweep {name}", name=name)
    searched_there = set((earlier.get("space") or {}))
    from hypir_sweep.assembly import optuna_distributions

    distributions = optuna_distributions(spec)
    space = {p.key: p for p in spec.space}
    states = optuna.trial.TrialState
    for frozen in newest_records(study).values():
        if frozen.state == states.FAIL and frozen.user_attrs.get("ending") in (None, ERROR, ORPHANED):
            continue  # a crash or an interruption says nothing about the config
        if frozen.state == states.FAIL and not frozen.constraints:
            _left(found, "failed for a reason other than its config")
            continue
        params, why = _fit(frozen.params, space, searched_there, their_cfg, spec.base)
        if why:
            _left(found, why)
            continue
        found.records.append(optuna.trial.create_trial(
            state=frozen.state, values=frozen.values if frozen.state == states.COMPLETE else None,
            params=params, distributions={k: distributions[k] for k in params},
            intermediate_values=dict(frozen.intermediate_values),
            user_attrs={**{k: v for k, v in frozen.user_attrs.items() if k != "ray_trial_id"},
                        WARM_START_ATTR: f"{name} trial {frozen.number}"},
            system_attrs={k: v for k, v in frozen.system_attrs.items() if k.startswith("constraints")}))
    if not found.records:
        reasons = "; ".join(f"{n} {why}" for why, n in found.left_out.items()) or "it has no ended trial"
        refuse(f"{where}, none of whose trials fits this sweep's space ({reasons}); widen the space, or drop the "
               f"folder from search.warm_start.")
    return found


def _fit(params: dict, space: dict, searched_there: set, their_cfg, our_base) -> tuple[dict, str]:
    """The earlier trial's values of this sweep's space keys, or why it does not fit."""
    values = {}
    for key, param in space.items():
        value = params.get(key, _value(their_cfg, key))
        if value is None or not param.contains(value):
            return {}, f"with {key} outside this space"
        values[key] = value
    for key in sorted(searched_there - set(space)):
        if key in params and params[key] != _value(our_base, key):
            return {}, f"trained with another {key} than this sweep's fixed {_value(our_base, key)!r}"
    return values, ""


def _value(cfg, key: str) -> Any:
    try:
        return read(cfg, key)
    except (AttributeError, IndexError, KeyError, TypeError, ConfigError):
        return None


def _left(found: Earlier, why: str) -> None:
    found.left_out[why] = found.left_out.get(why, 0) + 1


def _mode(metric: str) -> str:
    return "min" if metric.endswith("LPIPS") else "max"


def _said(pairs) -> str:
    return ", ".join(f"{metric} ({mode})" for metric, mode in pairs)


def seed_study(spec, storage) -> list[Earlier]:
    """Add the earlier sweeps' fitting trials to this sweep's study, once: only a study that holds no trial yet
    takes them (a resumed sweep has them already)."""
    import optuna

    from hypir_sweep.spec import SpecError

    if not spec.search.warm_start:
        return []

    def refuse(sentence: str):
        raise SpecError(sentence)

    directions = [o.mode for o in spec.objectives] or [spec.mode]
    study = optuna.create_study(study_name=spec.name, storage=storage, load_if_exists=True,
                                directions=["maximize" if d == "max" else "minimize" for d in directions])
    if study.get_trials(deepcopy=False):
        return []
    found = earlier_sweeps(spec, refuse)
    for earlier in found:
        study.add_trials(earlier.records)
    return found
