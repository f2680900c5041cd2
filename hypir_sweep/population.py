"""Population-based training (Ray Tune's PBT and PB2) over HYPIR trials, and the schedule its winner followed.

Every ``perturbation_interval`` validation rounds, a trial in the weakest quantile of the population
copies the state of one in the strongest (LoRA, discriminator heads, optimizers, EMA, data position,
RNG: the whole trainer checkpoint) and goes on training with mutated values of
``hyperparam_mutations`` (learning rates, loss weights: what a schedule can change). The population
starts from the spec's warm-start points (the users' configs) and random draws from the space.

The copied checkpoint is put in the receiving trial's own folder at once, so the donor's checkpoint
rotation cannot delete it before the receiver restarts. Each reported checkpoint carries the history
of values its weights were trained with (``lineage``), so the winner's schedule is read off its last
checkpoint: ``best_schedule.yaml``, a single config whose ``schedule:`` replays it exactly.
"""

from __future__ import annotations

import os
import shutil

from hypir_sweep.spec import SpecError, SweepSpec
from hypir_sweep.trial import EXPLOITED


def population_scheduler(spec: SweepSpec, mutations: dict):
    """PBT or PB2 on validation rounds, copying exploited checkpoints into the receiving trial."""
    from ray.tune.schedulers import PopulationBasedTraining

    from hypir_sweep.search import ROUND

    s = spec.scheduler
    common = dict(time_attr=ROUND, perturbation_interval=s.perturbation_interval,  # metric, mode: from the Tuner
                  quantile_fraction=s.quantile_fraction, synch=s.synch)
    if s.type == "pb2":
        try:
            from ray.tune.schedulers.pb2 import PB2
        except ImportError as exc:
            raise SpecError(f"scheduler type pb2 in {spec.source} needs scikit-learn: pip install -e '.[pb2]' "
                            f"({exc}).") from None
        bounds = {p.key: [p.low, p.high] for p in s.hyperparam_mutations}
        return _copying(PB2)(hyperparam_bounds=bounds, **common)
    return _copying(PopulationBasedTraining)(hyperparam_mutations=mutations,
                                             resample_probability=s.resample_probability, **common)


def _copying(scheduler_class):
    """``scheduler_class`` whose exploit hands the receiver its own copy of the donor's checkpoint, and which
    resumes with the per-trial state and synchronisation point saved with the sweep (hypir_sweep.resume)."""
    from hypir_sweep.resume import restore_pbt_trial, unstall_pbt

    class Copying(scheduler_class):
        def on_trial_add(self, tune_controller, trial):
            super().on_trial_add(tune_controller, trial)
            restore_pbt_trial(self, trial)

        def choose_trial_to_run(self, tune_controller):
            chosen = super().choose_trial_to_run(tune_controller)
            if chosen is None and self._synch:
                unstall_pbt(self, tune_controller)
                chosen = super().choose_trial_to_run(tune_controller)
            return chosen

        def _exploit(self, tune_controller, trial, trial_to_clone):
            super()._exploit(tune_controller, trial, trial_to_clone)
            # Ray pauses a receiver that is still saving its own round by stopping its process, and caches a
            # STOP for when that save resolves (ray-project/ray#57906). The save is dropped with the process,
            # so the STOP waits for the receiver's next save, after its first round on the donor's state, and
            # ends it there, rounds short. The receiver is paused: nothing is pending for it.
            getattr(tune_controller, "_tune_controller", tune_controller)._cached_trial_decisions.pop(
                trial.trial_id, None)
            # Ray points the receiver at the donor's latest checkpoint (a private field, as Ray's own
            # PBT sets it); copy it so the donor's num_to_keep rotation cannot remove it first.
            manager = trial.run_metadata.checkpoint_manager
            result = manager._latest_checkpoint_result
            copied = copy_exploited(result.checkpoint.path, trial.path)
            result.checkpoint = type(result.checkpoint).from_directory(copied)

    Copying.__name__ = Copying.__qualname__ = f"Copying{scheduler_class.__name__}"
    return Copying


def copy_exploited(source: str, trial_dir: str) -> str:
    """Copy a donor's checkpoint folder into the receiving trial's folder; drop its older copies."""
    os.makedirs(trial_dir, exist_ok=True)
    existing = sorted(name for name in os.listdir(trial_dir) if name.startswith(EXPLOITED))
    # Numbered after the newest copy: the older ones are removed, so their count would name one that exists.
    number = int(existing[-1][len(EXPLOITED):]) + 1 if existing else 1
    target = os.path.join(trial_dir, f"{EXPLOITED}{number:04d}")
    shutil.copytree(source, target)
    for name in existing[:-1]:  # the newest older copy may still be the one a retry restores from
        shutil.rmtree(os.path.join(trial_dir, name), ignore_errors=True)
    return target


def initial_population(spec: SweepSpec):
    """The starting population: the warm-start points first, then seeded random draws from the space."""
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(points_to_evaluate=[dict(p) for p in spec.search.points_to_evaluate] or None,
                                 random_state=spec.search.seed, max_concurrent=spec.search.max_concurrent_trials)


def lineage_schedule(lineage: list[dict]) -> tuple[dict, list[dict]]:
    """(the first segment's params, schedule entries for the later ones) from a checkpoint's lineage."""
    first, *later = lineage
    entries, current = [], dict(first["params"])
    for segment in later:
        changed = {k: v for k, v in segment["params"].items() if current.get(k) != v}
        current.update(segment["params"])
        if changed:
            entries.append({"from_step": segment["from_step"], "overrides": changed})
    return dict(first["params"]), entries
