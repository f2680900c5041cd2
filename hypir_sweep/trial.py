"""One sweep trial: the ``hypir_core`` trainer run inside Ray Tune.

Every validation round goes to ``tune.report`` with the round's checkpoint, so a scheduler can
stop the trial and a retry (``max_failures``) continues from the last round. The trial's folder
holds what a user reads afterwards: ``config.yaml`` (the complete training config, runnable with
``launch.py --single``), ``summary.json`` and HYPIR-format weights. The SwanLab runs of all trials go
to one folder, ``<sweep>/swanlog`` (in local mode one dashboard: ``swanlab watch <sweep>/swanlog``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import replace

import yaml

from hypir_core.config import config_to_dict
from hypir_core.reporting import JsonSummaryReporter
from hypir_sweep.dashboard import swanlog_dir
from hypir_sweep.spec import SweepSpec

TRIAL_CONFIG = "config.yaml"
SUMMARY = "summary.json"


def trial_dirname(trial) -> str:
    """Trial folders named by trial id (Ray's default name holds every parameter and gets long)."""
    return f"trial_{trial.trial_id}"  # run_trial relies on this name


def trial_name(trial) -> str:
    return trial.trial_id


def _previous_rounds(output_dir: str) -> list[dict]:
    """Rounds an earlier attempt of this trial wrote (a retry or a resumed sweep continues them)."""
    try:
        with open(os.path.join(output_dir, SUMMARY)) as handle:
            return json.load(handle).get("rounds", [])
    except (OSError, ValueError):
        return []


def _finished(output_dir: str) -> bool:
    try:
        with open(os.path.join(output_dir, SUMMARY)) as handle:
            status = json.load(handle).get("status", "")
    except (OSError, ValueError):
        return False
    # Not "stopped early": HyperBand pauses trials that way and restarts them to train on.
    return status == "completed" or status.startswith("diverged")


def run_trial(params: dict, spec: SweepSpec, experiment_dir: str | None) -> None:
    """Train the base config with this trial's sampled ``params``; report every round to Tune.

    ``experiment_dir`` is the sweep folder when it is a local or shared (NFS) path: the trial writes
    straight into its folder there. With object storage (None) it writes into Ray's working folder,
    which Ray uploads when the trial ends.
    """
    import torch
    from ray import tune

    from hypir_core.trainer import BEST_WEIGHTS, FINAL_WEIGHTS, StopTraining, train

    context = tune.get_context()
    trial_id = context.get_trial_id()
    output_dir = os.path.join(experiment_dir, f"trial_{trial_id}") if experiment_dir else os.getcwd()
    os.makedirs(output_dir, exist_ok=True)
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    logging.getLogger("hypir_core").setLevel(logging.INFO)

    cfg = spec.trial_config(params, output_dir, name=f"{spec.name}-{trial_id}",
                            logging_dir=swanlog_dir(experiment_dir) if experiment_dir else None)
    config_dict = config_to_dict(cfg)
    with open(os.path.join(output_dir, TRIAL_CONFIG), "w") as handle:
        handle.write(f"# sweep {spec.name}, trial {trial_id}: the complete training config; "
                     f"train it alone with python launch.py --single {TRIAL_CONFIG}\n")
        yaml.safe_dump(config_dict, handle, sort_keys=False)

    checkpoint = tune.get_checkpoint()  # set when Tune retries this trial or resumes the sweep
    if checkpoint is not None and _finished(output_dir):
        return  # it ended just before the sweep was interrupted, after Tune's last state snapshot
    resume_dir, copied = None, False
    if checkpoint is not None:
        if checkpoint.filesystem.type_name == "local":
            resume_dir = checkpoint.path
        else:
            resume_dir, copied = checkpoint.to_directory(os.path.join(output_dir, "resume-checkpoint")), True
        cfg = replace(cfg, resume_from_checkpoint=resume_dir)
    reporter = JsonSummaryReporter(output_dir, {**config_dict, "sweep": {"name": spec.name, "trial_id": trial_id,
                                                                        "params": params}},
                                   rounds=_previous_rounds(output_dir) if resume_dir else None)
    sent = {"checkpoint": None}

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        # Rounds past the checkpoint a retry resumed from are trained again: keep the new ones.
        reporter.data["rounds"] = [r for r in reporter.data["rounds"] if r["metrics"]["step"] < metrics["step"]]
        reporter(metrics, None)  # the folder is Tune's to keep; ours is removed below
        if metrics["step"] >= cfg.max_train_steps:
            # Tune stops a trial as soon as its last round arrives and may end the process before
            # train() returns: record the ending first.
            weights = {kind: os.path.join(output_dir, name) for kind, name in (("best", BEST_WEIGHTS),
                                                                                ("final", FINAL_WEIGHTS))}
            reporter.finish("completed", steps=metrics["step"],
                            weights={k: p for k, p in weights.items() if os.path.exists(p)})
        ckpt = None
        if checkpoint_dir and checkpoint_dir != sent["checkpoint"]:
            ckpt = tune.Checkpoint.from_directory(checkpoint_dir)
            sent["checkpoint"] = checkpoint_dir
        try:
            tune.report({**metrics, "round": len(reporter.data["rounds"])}, checkpoint=ckpt)
        except SystemExit:
            # Tune ends a stopped trial (early stopping, or the full budget reached) by raising
            # SystemExit in report: end the run cleanly so summary and SwanLab say so.
            if metrics["step"] < cfg.max_train_steps:  # first: Ray ends the process about 0.1 s later
                reporter.finish(f"stopped early at step {metrics['step']}", steps=metrics["step"])
            raise StopTraining from None
        finally:
            if ckpt is not None:
                # tune.report has copied it into the trial's checkpoint_* folder (what a retry
                # resumes from); keeping ours would double the disk.
                shutil.rmtree(checkpoint_dir, ignore_errors=True)

    try:
        summary = train(cfg, report, progress_bar=False, group=spec.name,
                        tracker_config={"sweep": {"name": spec.name, "trial_id": trial_id, "params": params}})
    except BaseException as exc:
        reporter.finish(f"crashed: {type(exc).__name__}: {exc}")
        raise
    finally:
        if copied:
            shutil.rmtree(resume_dir, ignore_errors=True)
    reporter.finish(summary.status, best_round=summary.best_round, weights=summary.weights, steps=summary.steps,
                    skipped_images=summary.skipped_images, seconds=round(summary.seconds, 1))
    shutil.rmtree(os.path.join(output_dir, "checkpoints"), ignore_errors=True)
