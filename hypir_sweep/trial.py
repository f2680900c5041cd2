"""One sweep trial: the ``hypir_core`` trainer run inside Ray Tune.

Every validation round goes to ``tune.report`` with the round's checkpoint, so a scheduler can
stop the trial and a retry (``max_failures``) or a resumed sweep continues from the last round
Tune holds. The trial's folder holds what a user reads afterwards: ``config.yaml`` (the complete
training config, runnable with ``launch.py --single``), ``summary.json`` (every round, how the
trial ended, and every attempt with its time) and HYPIR-format weights. The SwanLab runs of all
trials go to one folder, ``<sweep>/swanlog`` (in local mode one dashboard: ``swanlab watch <sweep>/swanlog``).

An attempt that starts from a checkpoint at step S keeps the rounds up to S, trains the rest again
(training is deterministic, so the scores are those of an uninterrupted trial) and reports each
round once. A trial that had ended before the sweep was interrupted is not trained again: the
rounds Tune had not yet recorded are reported from its summary.
"""

from __future__ import annotations

import gc
import glob
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace

import yaml

from hypir_core import checkpoint as ckpt
from hypir_core import faults
from hypir_core.config import config_to_dict
from hypir_core.errors import ConfigError
from hypir_core.reporting import JsonSummaryReporter
from hypir_sweep.dashboard import swanlog_dir
from hypir_sweep.spec import SweepSpec

TRIAL_CONFIG = "config.yaml"
SUMMARY = "summary.json"
ROUND_FILE = "hypir_round.json"  # written into each reported checkpoint: the step and round it holds
ENDING = "trial_ending"
# Tune checkpoints a trial keeps: the newest two, and every one younger than any state-snapshot lag.
KEEP_CHECKPOINTS, KEEP_SECONDS = 2, 120.0
EXPLOITED = "exploited_"  # checkpoints population-based training copied into the trial (hypir_sweep.population)  # result key of the last report of a trial that ended without finishing its budget
# Statuses after which a trial is over for good (a retry or resume must not train it again).
_ENDED = ("completed", "diverged", "out of memory", "refused")


def trial_dirname(trial) -> str:
    """Trial folders named by trial id (Ray's default name holds every parameter and gets long)."""
    return f"trial_{trial.trial_id}"  # run_trial relies on this name


def trial_name(trial) -> str:
    return trial.trial_id


def read_summary(output_dir: str) -> dict:
    try:
        with open(os.path.join(output_dir, SUMMARY)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def ended(status: str) -> bool:
    # Not "stopped early": HyperBand pauses trials that way and restarts them to train on.
    return status.startswith(_ENDED)


def prune_tune_checkpoints(trial_dir: str, keep: int = KEEP_CHECKPOINTS, min_age_s: float = KEEP_SECONDS) -> None:
    """Delete this trial's older Tune checkpoints: all but the newest ``keep``, and none younger than ``min_age_s``.

    Tune keeps every checkpoint (num_to_keep=None) and the trial prunes its own: Ray's state snapshot can
    lag the newest checkpoints by a few seconds, and after a killed driver a resume restores the one the
    snapshot names, so a checkpoint is only deleted once it is older than any snapshot lag.
    """
    found = sorted(glob.glob(os.path.join(trial_dir, "checkpoint_*")))
    now = time.time()
    for path in found[:-keep] if keep else found:
        if now - os.path.getmtime(path) > min_age_s:
            shutil.rmtree(path, ignore_errors=True)


def round_info(path: str) -> dict:
    """What a reported checkpoint says of itself: its step and round, the trial that wrote it, the rounds and
    the values (``lineage``) its weights went through; {} if it says nothing."""
    try:
        with open(os.path.join(path, ROUND_FILE)) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def use_cpu_only() -> None:
    """A trial given no GPU trains on the CPU, even on a machine with GPUs (Ray no longer hides them)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ["ACCELERATE_USE_CPU"] = "true"


def _write_trial_config(output_dir: str, config_dict: dict, spec: SweepSpec, trial_id: str) -> None:
    # Running it alone must not write into the sweep: it gets its own output folder.
    standalone = {**config_dict, "output_dir": f"results/{spec.name}-{trial_id}", "logging_dir": "logs"}
    with open(os.path.join(output_dir, TRIAL_CONFIG), "w") as handle:
        handle.write(f"# sweep {spec.name}, trial {trial_id}: the complete training config; train it alone with\n"
                     f"# python launch.py --single {TRIAL_CONFIG} (writes into {standalone['output_dir']})\n")
        yaml.safe_dump(standalone, handle, sort_keys=False)


def run_trial(params: dict, spec: SweepSpec, experiment_dir: str | None) -> None:
    """Train the base config with this trial's sampled ``params``; report every round to Tune.

    ``experiment_dir`` is the sweep folder when it is a local or shared (NFS) path: the trial writes
    straight into its folder there. With object storage (None) it writes into Ray's working folder,
    which Ray uploads when the trial ends.
    """
    if spec.resources.gpu <= 0:
        use_cpu_only()
    else:
        from hypir_core.speed import GPU_SHARE_ENV

        os.environ[GPU_SHARE_ENV] = f"{spec.resources.gpu:g}"  # gradient_checkpointing: auto sizes the run to it
    import torch
    from ray import tune

    # This process may have trained another trial before (the sweep reuses it): let that one's memory go.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

    from hypir_core.trainer import StopTraining, train

    context = tune.get_context()
    trial_id = context.get_trial_id()
    output_dir = os.path.join(experiment_dir, f"trial_{trial_id}") if experiment_dir else os.getcwd()
    # With object storage, Ray uploads output_dir when the trial ends: the trainer works in a local
    # folder and only what a user reads (summary, config, weights, logs) is published into it.
    work_dir = output_dir if experiment_dir else os.path.join(tempfile.gettempdir(), "hypir-sweep-work", spec.name,
                                                              f"trial_{trial_id}")
    os.makedirs(output_dir, exist_ok=True)
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    logging.getLogger("hypir_core").setLevel(logging.INFO)
    fault_dir = os.environ.get(faults.DIR_ENV) or output_dir
    previous = read_summary(output_dir)
    checkpoint = tune.get_checkpoint()  # set when Tune retries this trial or resumes the sweep
    if checkpoint is None:
        previous = {}  # a fresh start: nothing an earlier attempt wrote counts
    ckpt.clear(work_dir)  # the trainer's own copies from an attempt that died: never mix them with ours

    resume_dir, copied, restored = None, False, {}
    if checkpoint is not None:
        if checkpoint.filesystem.type_name == "local":
            resume_dir = checkpoint.path
        else:
            resume_dir, copied = checkpoint.to_directory(os.path.join(output_dir, "resume-checkpoint")), True
        restored = round_info(resume_dir)
    resume_step = int(restored.get("step", 0))
    # Population-based training hands a trial another trial's checkpoint (and new values) to go on from.
    donor = restored.get("trial")
    exploited = donor is not None and donor != trial_id

    sweep_info = {"name": spec.name, "trial_id": trial_id, "params": params}
    attempt = {"from_step": resume_step, "started": time.time(), "seconds": 0.0,
               **({"exploited": donor} if exploited else {})}
    lineage = list(restored.get("lineage") or [])
    # The values this trial's weights are trained with from here (an exploit at the last round trains nothing).
    if (not lineage or lineage[-1]["params"] != params) and resume_step < spec.base.max_train_steps:
        lineage.append({"trial": trial_id, "from_step": resume_step + 1, "params": params})

    stopped_by_tune: list[bool] = []

    def report_to_tune(metrics: dict, checkpoint_dir: str | None = None) -> None:
        ckpt_obj = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        faults.fire("report", int(metrics.get("step", 0)), fault_dir)
        try:
            tune.report(metrics, checkpoint=ckpt_obj)
            if ckpt_obj is not None and experiment_dir:
                prune_tune_checkpoints(output_dir)
        except SystemExit:
            # Tune ends a stopped trial (early stopping, or the full budget reached) by raising
            # SystemExit in report: end the run cleanly so summary and SwanLab say so, then end
            # the function the same way (a reused process waits for it before the next trial).
            stopped_by_tune.append(True)
            if metrics["step"] < cfg.max_train_steps:  # first: Ray ends the process about 0.1 s later
                reporter.finish(f"stopped early at step {metrics['step']}", steps=metrics["step"])
            raise StopTraining from None
        finally:
            if checkpoint_dir:
                # tune.report has copied it into the trial's checkpoint_* folder (what a retry
                # resumes from); keeping ours would double the disk.
                shutil.rmtree(checkpoint_dir, ignore_errors=True)

    if checkpoint is not None and not exploited and ended(previous.get("status", "")):
        # It ended after Tune's last state snapshot: report what Tune missed, train nothing.
        _replay_ending(output_dir, previous, resume_step, {**attempt, "replayed": True}, report_to_tune)
        _end(stopped_by_tune)
        return

    if "rounds" in restored:  # the rounds the restored weights went through (another trial's, after an exploit)
        kept = restored["rounds"]
    else:
        kept = [r for r in previous.get("rounds", []) if r["metrics"]["step"] <= resume_step]
    reporter = JsonSummaryReporter(output_dir, {"sweep": sweep_info}, rounds=kept)
    reporter.data["attempts"] = previous.get("attempts", []) + [attempt]
    reporter.data["lineage"] = lineage

    try:
        cfg = spec.trial_config(params, work_dir, name=f"{spec.name}-{trial_id}",
                                logging_dir=swanlog_dir(experiment_dir) if experiment_dir else None)
    except ConfigError as exc:  # e.g. every loss weight sampled 0: not a config anyone can train
        reporter.finish(f"refused: {exc}")
        try:
            report_to_tune({ENDING: f"refused: {exc}", "round": 0, "step": 0})
        except StopTraining:
            pass
        _end(stopped_by_tune)
        return
    config_dict = config_to_dict(cfg)
    reporter.data["config"] = {**config_dict, "sweep": sweep_info}
    _write_trial_config(output_dir, config_dict, spec, trial_id)
    if resume_dir:
        cfg = replace(cfg, resume_from_checkpoint=resume_dir)

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        # Rounds past the checkpoint this attempt resumed from are trained again: keep the new ones.
        reporter.data["rounds"] = [r for r in reporter.data["rounds"] if r["metrics"]["step"] < metrics["step"]]
        attempt["seconds"] = round(time.time() - attempt["started"], 1)
        reporter(metrics, None)  # the folder is Tune's to keep; ours is removed once reported
        round_number = len(reporter.data["rounds"])
        if metrics["step"] >= cfg.max_train_steps:
            # Tune stops a trial as soon as its last round arrives and may end the process before
            # train() returns: record the ending first.
            reporter.finish("completed", steps=metrics["step"], weights=_publish(work_dir, output_dir, cfg.logging_dir))
        if checkpoint_dir:
            ckpt.write_json(os.path.join(checkpoint_dir, ROUND_FILE),
                            {"step": metrics["step"], "round": round_number, "trial": trial_id, "lineage": lineage,
                             "rounds": reporter.data["rounds"]})
        try:
            report_to_tune({**metrics, "round": round_number}, checkpoint_dir)
        except StopTraining:
            if metrics["step"] < cfg.max_train_steps:  # first: Ray ends the process about 0.1 s later
                reporter.finish(f"stopped early at step {metrics['step']}", steps=metrics["step"])
            raise

    try:
        summary = train(cfg, report, progress_bar=False, group=spec.name,
                        tracker_config={"sweep": sweep_info})
    except BaseException as exc:
        attempt["seconds"] = round(time.time() - attempt["started"], 1)
        reporter.finish(str(exc) if isinstance(exc, ckpt.DiskFullError) else f"crashed: {type(exc).__name__}: {exc}")
        raise
    finally:
        if copied:
            shutil.rmtree(resume_dir, ignore_errors=True)
    attempt["seconds"] = round(time.time() - attempt["started"], 1)
    reporter.finish(summary.status, best_round=summary.best_round, weights=_publish(work_dir, output_dir, cfg.logging_dir),
                    steps=summary.steps, skipped_images=summary.skipped_images)
    ckpt.clear(work_dir)
    if work_dir != output_dir:
        shutil.rmtree(work_dir, ignore_errors=True)

    if ended(summary.status) and summary.status != "completed" and not stopped_by_tune:
        # Diverged or out of memory: say so to Tune in a last result, so the searcher records a failure.
        try:
            report_to_tune({ENDING: summary.status, "round": len(reporter.data["rounds"]), "step": summary.steps})
        except StopTraining:
            pass
    _end(stopped_by_tune)


def _end(stopped_by_tune: list[bool]) -> None:
    """Return to Tune as it asked: a trial it stopped ends by SystemExit(0), as its ``report`` raised it.

    Returning normally would make Ray report once more and wait for an answer that never comes, which
    blocks a reused process (reuse_actors) from starting the next trial.
    """
    if stopped_by_tune:
        raise SystemExit(0)


def _publish(work_dir: str, output_dir: str, logging_dir: str) -> dict[str, str]:
    """Copy what a user reads from the trainer's folder into the trial folder (when they differ); return
    the weights found there, by kind."""
    if work_dir != output_dir:
        for name in (*ckpt.WEIGHT_FILES, *map(ckpt.weights_info_path, ckpt.WEIGHT_FILES), "val_per_image.csv"):
            if os.path.exists(os.path.join(work_dir, name)):
                shutil.copy2(os.path.join(work_dir, name), os.path.join(output_dir, name))
        if os.path.isdir(os.path.join(work_dir, logging_dir)):
            shutil.copytree(os.path.join(work_dir, logging_dir), os.path.join(output_dir, logging_dir),
                            dirs_exist_ok=True)
    paths = {kind: os.path.join(output_dir, name) for kind, name in (("best", ckpt.BEST_WEIGHTS),
                                                                     ("final", ckpt.FINAL_WEIGHTS))}
    return {kind: path for kind, path in paths.items() if os.path.exists(path)}


def _replay_ending(output_dir: str, previous: dict, resume_step: int, attempt: dict, report_to_tune) -> None:
    """Report the rounds (and ending) of an ended trial that Tune's restored state had not seen."""
    from hypir_core.trainer import StopTraining

    previous["attempts"] = previous.get("attempts", []) + [attempt]
    ckpt.write_json(os.path.join(output_dir, SUMMARY), previous)  # its status and finish time unchanged
    try:
        for index, entry in enumerate(previous.get("rounds", []), start=1):
            if entry["metrics"]["step"] > resume_step:
                report_to_tune({**entry["metrics"], "round": index})
        if previous["status"] != "completed":
            report_to_tune({ENDING: previous["status"], "round": len(previous.get("rounds", [])),
                            "step": previous.get("steps", 0)})
    except StopTraining:
        pass
