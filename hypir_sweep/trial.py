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
import threading
import time
from dataclasses import replace

import yaml

from hypir_core import checkpoint as ckpt
from hypir_core import faults
from hypir_core.config import config_to_dict
from hypir_core.errors import ConfigError
from hypir_core.quiet import verbose
from hypir_core.reporting import JsonSummaryReporter
from hypir_sweep.dashboard import swanlog_dir
from hypir_sweep.spec import SweepSpec

ROUND = "round"  # the time axis every scheduler and the sampler use: validation rounds of the trial
ENDING = "trial_ending"  # result key of the last report of a trial that ended short of its budget
TRIAL_CONFIG = "config.yaml"
SUMMARY = "summary.json"
ROUND_FILE = "hypir_round.json"  # written into each reported checkpoint: the step and round it holds
# Tune checkpoints a trial keeps: the newest two, and every one younger than any state-snapshot lag.
KEEP_CHECKPOINTS, KEEP_SECONDS = 2, 120.0
EXPLOITED = "exploited_"  # checkpoints population-based training copied into the trial (hypir_sweep.population)
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


# How long a trial in a reused process waits for the trial that process ran before to finish writing
# (summary, weights, its tracker); past that it fails, and Tune retries it in a fresh process.
REUSE_WAIT_ENV, REUSE_WAIT_S = "HYPIR_SWEEP_REUSE_WAIT_S", 600.0
_QUICK_END_S = 2.0  # Ray's own wait: most stopped trials have ended by then
_still_ending: list[threading.Thread] = []  # the threads of earlier trials of this process that were still writing


def sweep_trainable(spec: SweepSpec, experiment_dir: str | None):
    """``run_trial`` as Tune's trainable class, whose process may go on to the sweep's next trial.

    Ray hands a stopped trial's process to the next trial after waiting 2 s for it to end, and fails the
    next trial (without a retry) if it has not: the wait moves into the next trial (``TrialAttempt.run``),
    where running out of it is an ordinary trial failure that Tune retries in a fresh process.
    """
    from ray import tune
    from ray.tune.trainable.function_trainable import wrap_function

    class SweepTrial(wrap_function(tune.with_parameters(run_trial, spec=spec, experiment_dir=experiment_dir))):
        def reset_config(self, new_config):
            _hand_over_process()
            return super().reset_config(new_config)

        def save_checkpoint(self, checkpoint_dir: str = ""):
            saved = super().save_checkpoint(checkpoint_dir)  # the newest reported round and its checkpoint
            faults.fire("save", int(saved.metrics.get("step", 0)) if saved is not None else 0, trial=self.trial_id)
            return saved

    SweepTrial.__name__ = SweepTrial.__qualname__ = "run_trial"
    return SweepTrial


def _hand_over_process() -> None:
    """Before Ray starts the next trial in this process: give the stopped one Ray's 2 s, then let the next trial
    wait for the rest (a module function, so the worker uses this module's ``_still_ending``: the trainable
    class travels to the worker by value)."""
    from ray.train._internal.session import get_session

    session = get_session()
    session.finish(timeout=_QUICK_END_S)
    if session.training_thread.is_alive():
        _still_ending.append(session.training_thread)
        ended = threading.Thread(target=lambda: None)
        ended.start()
        ended.join()
        session.training_thread = ended  # Ray's own check would fail the next trial here


def _wait_for_earlier_trials() -> None:
    """Wait for the earlier trials of this process to finish writing; a wait that runs out fails this attempt."""
    wait = float(os.environ.get(REUSE_WAIT_ENV, REUSE_WAIT_S))
    deadline = time.monotonic() + wait
    while _still_ending:
        _still_ending[0].join(timeout=max(0.0, deadline - time.monotonic()))
        if _still_ending[0].is_alive():
            raise RuntimeError(f"the trial this process ran before was still writing after {wait:g} s "
                               f"({REUSE_WAIT_ENV}); this trial is retried in a fresh process")
        _still_ending.pop(0)


def run_trial(params: dict, spec: SweepSpec, experiment_dir: str | None) -> None:
    """Train the base config with this trial's sampled ``params``; report every round to Tune.

    ``experiment_dir`` is the sweep folder when it is a local or shared (NFS) path: the trial writes
    straight into its folder there. With object storage (None) it writes into Ray's working folder,
    which Ray uploads when the trial ends.
    """
    TrialAttempt(params, spec, experiment_dir).run()


class TrialAttempt:
    """One attempt at a trial, from the checkpoint Tune gives it (if any) to the end of its budget or its stop.

    ``restore`` reads where the trial stands; a trial that had already ended is not trained again
    (``replay_ending`` tells Tune what its snapshot missed), any other trains (``train``), each round
    going to Tune (``report``, ``tell_tune``). Tune stops a trial by raising SystemExit in ``tune.report``;
    the attempt then records ``stopped early at step N`` (``stop``) and ends the same way (``run``).
    """

    def __init__(self, params: dict, spec: SweepSpec, experiment_dir: str | None):
        from ray import tune

        self.params, self.spec, self.experiment_dir = params, spec, experiment_dir
        self.trial_id = tune.get_context().get_trial_id()
        self.output_dir = os.path.join(experiment_dir, f"trial_{self.trial_id}") if experiment_dir else os.getcwd()
        # With object storage, Ray uploads output_dir when the trial ends: the trainer works in a local
        # folder and only what a user reads (summary, config, weights, logs) is published into it.
        self.work_dir = self.output_dir if experiment_dir else os.path.join(
            tempfile.gettempdir(), "hypir-sweep-work", spec.name, f"trial_{self.trial_id}")
        self.fault_dir = os.environ.get(faults.DIR_ENV) or self.output_dir
        self.sweep_info = {"name": spec.name, "trial_id": self.trial_id, "params": params}
        self.stopped, self.stopped_at = False, 0  # Tune stopped this trial (early stopping, or its budget reached)
        self.reporter: JsonSummaryReporter | None = None
        self.cfg = None

    # ---- the attempt, top to bottom --------------------------------------------------------------
    def run(self) -> None:
        """Restore, then replay an ending or train; end as Tune expects (SystemExit(0) once it has stopped us)."""
        from hypir_core.trainer import StopTraining

        _wait_for_earlier_trials()
        _prepare_process(self.spec)
        os.makedirs(self.output_dir, exist_ok=True)
        try:
            self.restore()
            if self.ended_before():
                self.replay_ending()
            else:
                self.train()
        except StopTraining:
            pass
        except BaseException as exc:
            if not self.stopped:
                raise
            # Tune has stopped this trial already and would drop an error now (this process may go on to the
            # next trial): keep it where the user reads the trial.
            logging.getLogger("hypir_sweep").error("Trial %s failed after it was stopped: %s", self.trial_id, exc)
            if self.reporter is not None:
                self.reporter.finish(self.reporter.data["status"], error_after_stop=f"{type(exc).__name__}: {exc}")
        if self.stopped:
            faults.fire("stopped", self.stopped_at, self.fault_dir)
            # Returning normally would make Ray report once more and wait for an answer that never comes,
            # which blocks a reused process from starting the next trial.
            raise SystemExit(0)

    def restore(self) -> None:
        """Where this attempt starts: Tune's checkpoint (a retry, a resumed sweep, an exploit) or nothing."""
        from ray import tune

        self.previous = read_summary(self.output_dir)
        checkpoint = tune.get_checkpoint()  # set when Tune retries this trial or resumes the sweep
        if checkpoint is not None and checkpoint.filesystem.type_name == "local" and \
                not os.path.isdir(checkpoint.path):
            # An older snapshot (the newest was damaged) can name a checkpoint since pruned: start over.
            logging.getLogger("hypir_sweep").warning("Trial %s: its checkpoint %s is gone; training it from the "
                                                     "start (the scores are the same).", self.trial_id, checkpoint.path)
            checkpoint = None
        self.from_tune = checkpoint is not None
        if checkpoint is None:
            self.previous = {}  # a fresh start: nothing an earlier attempt wrote counts
        ckpt.clear(self.work_dir)  # the trainer's own copies from an attempt that died: never mix them with ours
        self.resume_dir, self.copied, restored = None, False, {}
        if checkpoint is not None:
            if checkpoint.filesystem.type_name == "local":
                self.resume_dir = checkpoint.path
            else:
                self.resume_dir = checkpoint.to_directory(os.path.join(self.output_dir, "resume-checkpoint"))
                self.copied = True
            restored = round_info(self.resume_dir)
        self.restored = restored
        self.resume_step = int(restored.get("step", 0))
        # Population-based training hands a trial another trial's checkpoint (and new values) to go on from.
        donor = restored.get("trial")
        self.exploited = donor is not None and donor != self.trial_id
        self.attempt = {"from_step": self.resume_step, "started": time.time(), "seconds": 0.0, "pid": os.getpid(),
                        **({"exploited": donor} if self.exploited else {})}
        self.lineage = list(restored.get("lineage") or [])
        # The values this trial's weights are trained with from here (an exploit at the last round trains nothing).
        if (not self.lineage or self.lineage[-1]["params"] != self.params) and \
                self.resume_step < self.spec.base.max_train_steps:
            self.lineage.append({"trial": self.trial_id, "from_step": self.resume_step + 1, "params": self.params})

    def ended_before(self) -> bool:
        """It ended after Tune's last state snapshot (Tune gives it a checkpoint but it is over)."""
        return self.from_tune and not self.exploited and ended(self.previous.get("status", ""))

    def replay_ending(self) -> None:
        """Report the rounds (and ending) of an ended trial that Tune's restored state had not seen; train nothing."""
        previous = self.previous
        previous["attempts"] = previous.get("attempts", []) + [{**self.attempt, "replayed": True}]
        ckpt.write_json(os.path.join(self.output_dir, SUMMARY), previous)  # its status and finish time unchanged
        for index, entry in enumerate(previous.get("rounds", []), start=1):
            if entry["metrics"]["step"] > self.resume_step:
                self.tell_tune({**entry["metrics"], ROUND: index})
        if previous["status"] != "completed":
            self.tell_tune({ENDING: previous["status"], ROUND: len(previous.get("rounds", [])),
                            "step": previous.get("steps", 0)})

    def train(self) -> None:
        """Train from where restore left off, reporting every round; tell Tune how a cut-short run ended."""
        from hypir_core.trainer import train

        if "rounds" in self.restored:  # the rounds its restored weights went through (another trial's, if exploited)
            kept = self.restored["rounds"]
        else:
            kept = [r for r in self.previous.get("rounds", []) if r["metrics"]["step"] <= self.resume_step]
        # Every attempt and the lineage so far go into the first write: a kill right after it loses neither.
        self.reporter = JsonSummaryReporter(
            self.output_dir, {"sweep": self.sweep_info}, rounds=kept,
            extra={"attempts": self.previous.get("attempts", []) + [self.attempt], "lineage": self.lineage})
        try:
            cfg = self.spec.trial_config(self.params, self.work_dir, name=f"{self.spec.name}-{self.trial_id}",
                                         logging_dir=swanlog_dir(self.experiment_dir) if self.experiment_dir else None)
        except ConfigError as exc:  # e.g. every loss weight sampled 0: not a config anyone can train
            self.reporter.finish(f"refused: {exc}")
            self.tell_tune({ENDING: f"refused: {exc}", ROUND: 0, "step": 0})
            return
        config_dict = config_to_dict(cfg)
        self.reporter.data["config"] = {**config_dict, "sweep": self.sweep_info}
        _write_trial_config(self.output_dir, config_dict, self.spec, self.trial_id)
        self.cfg = replace(cfg, resume_from_checkpoint=self.resume_dir) if self.resume_dir else cfg
        try:
            summary = train(self.cfg, self.report, progress_bar=False, group=self.spec.name,
                            tracker_config={"sweep": self.sweep_info})
        except BaseException as exc:
            self._time_attempt()
            if not self.stopped:
                self.reporter.finish(str(exc) if isinstance(exc, ckpt.DiskFullError)
                                     else f"crashed: {type(exc).__name__}: {exc}")
            raise
        finally:
            if self.copied:
                shutil.rmtree(self.resume_dir, ignore_errors=True)
        self._time_attempt()
        self.reporter.finish(summary.status, best_round=summary.best_round, weights=self.publish(),
                             steps=summary.steps, skipped_images=summary.skipped_images)
        ckpt.clear(self.work_dir)
        if self.work_dir != self.output_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        if ended(summary.status) and summary.status != "completed" and not self.stopped:
            # Diverged or out of memory: say so to Tune in a last result, so the searcher records a failure.
            self.tell_tune({ENDING: summary.status, ROUND: len(self.reporter.data["rounds"]), "step": summary.steps})

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        """The trainer's callback: record the round in summary.json and its checkpoint, then give both to Tune."""
        reporter, step = self.reporter, metrics["step"]
        # Rounds past the checkpoint this attempt resumed from are trained again: keep the new ones.
        reporter.data["rounds"] = [r for r in reporter.data["rounds"] if r["metrics"]["step"] < step]
        self._time_attempt()
        reporter(metrics, None)  # the folder is Tune's to keep; ours is removed once reported
        round_number = len(reporter.data["rounds"])
        if step >= self.cfg.max_train_steps:
            # Tune stops a trial as soon as its last round arrives and may end the process before
            # train() returns: record the ending first.
            reporter.finish("completed", steps=step, weights=self.publish())
        if checkpoint_dir:
            ckpt.write_json(os.path.join(checkpoint_dir, ROUND_FILE),
                            {"step": step, "round": round_number, "trial": self.trial_id, "lineage": self.lineage,
                             "rounds": reporter.data["rounds"]})
        self.tell_tune({**metrics, ROUND: round_number}, checkpoint_dir)

    def tell_tune(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        """``tune.report`` with the round's checkpoint; if Tune stops the trial there, ``stop``."""
        from ray import tune

        ckpt_obj = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        faults.fire("report", int(metrics.get("step", 0)), self.fault_dir)
        try:
            tune.report(metrics, checkpoint=ckpt_obj)
            if ckpt_obj is not None and self.experiment_dir:
                prune_tune_checkpoints(self.output_dir)
        except SystemExit:
            self.stop(int(metrics.get("step", 0)))
        finally:
            if checkpoint_dir:
                # tune.report has copied it into the trial's checkpoint_* folder (what a retry
                # resumes from); keeping ours would double the disk.
                shutil.rmtree(checkpoint_dir, ignore_errors=True)

    def stop(self, step: int) -> None:
        """Tune stopped the trial at ``step``: record an early stop (the last round is recorded already), end."""
        from hypir_core.trainer import StopTraining

        self.stopped, self.stopped_at = True, step
        if self.reporter is not None and self.cfg is not None and step < self.cfg.max_train_steps:
            # First: Ray may end the process about 0.1 s later.
            self.reporter.finish(f"stopped early at step {step}", steps=step)
        raise StopTraining from None

    def publish(self) -> dict[str, str]:
        """Copy what a user reads into the trial folder; the weights found there, by kind."""
        return _publish(self.work_dir, self.output_dir, self.cfg.logging_dir)

    def _time_attempt(self) -> None:
        self.attempt["seconds"] = round(time.time() - self.attempt["started"], 1)


def _prepare_process(spec: SweepSpec) -> None:
    """Devices, threads and memory for this trial's process (which may have trained another trial before)."""
    if spec.resources.gpu <= 0:
        use_cpu_only()
    else:
        from hypir_core.speed import GPU_SHARE_ENV

        os.environ[GPU_SHARE_ENV] = f"{spec.resources.gpu:g}"  # gradient_checkpointing: auto sizes the run to it
    import torch

    gc.collect()  # a previous trial's memory goes first
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    torch.set_num_threads(max(1, int(spec.resources.cpu)))
    logging.getLogger("hypir_core").setLevel(logging.INFO)
    if not verbose():
        logging.getLogger("ray.train").setLevel(logging.WARNING)  # "Checkpoint successfully created" every round


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
