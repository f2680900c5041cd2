"""Checkpoints through accelerate's save_state/load_state, holding only what training changes.

A checkpoint folder ``checkpoints/checkpoint-<step>`` holds the LoRA weights, the discriminator heads,
both optimizers, the EMA, the training progress (step, data position, validation history) and the
RNG states, so a resumed run continues as the uninterrupted one would; runs that degrade HQ images on the fly
also keep their training-pair pool (``pair_pool.pth``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil

import torch

from hypir_core.errors import ConfigError, HypirError, WeightsError
from hypir_core.files import atomic_folder, atomic_write, write_json

_NAME = re.compile(r"^checkpoint-(\d+)$")
LORA_FILE = "lora.pth"
DISC_FILE = "disc_heads.pth"
PAIR_POOL_FILE = "pair_pool.pth"  # HQ-only runs: the training-pair pool (hypir_core.degradation.pool)
# HYPIR-format weights a run exports (the UNet's LoRA keys); each has a <name>.json naming its round.
FINAL_WEIGHTS, BEST_WEIGHTS = "HYPIR_sd2_final.pth", "HYPIR_sd2_best.pth"
WEIGHT_FILES = (BEST_WEIGHTS, FINAL_WEIGHTS)


class DiskFullError(HypirError, OSError):
    """A checkpoint or weights file could not be written because the disk (or quota) is full."""

    def __init__(self, path: str):
        super().__init__(f"disk full at {path}: free space there (earlier checkpoints are intact), then resume "
                         f"(a sweep: launch.py SPEC --resume; a single run: resume_from_checkpoint=latest).")
        self.path = path


@contextlib.contextmanager
def disk_full_error(path: str):
    """Turn ENOSPC/EDQUOT while writing ``path`` into a DiskFullError that names it."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(exc, DiskFullError):
            raise DiskFullError(path) from exc
        raise


@contextlib.contextmanager
def writing(path: str):
    """Write a checkpoint folder under a temporary name and rename it into place only when complete."""
    with disk_full_error(path), atomic_folder(path) as partial:
        yield partial


def weights_info_path(weights_path: str) -> str:
    return os.path.splitext(weights_path)[0] + ".json"


def weights_step(weights_path: str) -> int | None:
    """The step of the round whose weights ``weights_path`` holds (from its JSON), or None if unknown."""
    try:
        with open(weights_info_path(weights_path)) as handle:
            return int(json.load(handle)["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def export_weights(path: str, weights: dict, round_info: dict | None = None) -> str:
    """Write HYPIR-format weights atomically; ``round_info`` (step, metrics) goes beside them as JSON."""
    with disk_full_error(path):
        with atomic_write(path) as tmp:
            torch.save(weights, tmp)
        if round_info is not None:
            write_json(weights_info_path(path), round_info)
    return path


class TrainProgress:
    """Where training stands; registered with accelerate so it is saved in every checkpoint."""

    def __init__(self):
        self.global_step = 0
        self.epoch = 0
        self.batches_in_epoch = 0
        self.rounds: list[dict] = []
        self.skipped_images = 0
        self.posterior_rng = torch.Generator()

    def state_dict(self) -> dict:
        return {"global_step": self.global_step, "epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch,
                "rounds": self.rounds, "skipped_images": self.skipped_images,
                "posterior_rng": self.posterior_rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.global_step, self.epoch = state["global_step"], state["epoch"]
        self.batches_in_epoch, self.rounds = state["batches_in_epoch"], state["rounds"]
        self.skipped_images = state["skipped_images"]
        self.posterior_rng.set_state(state["posterior_rng"])


def load_pair_pool(path: str) -> dict:
    """The training-pair pool saved in checkpoint folder ``path``; a checkpoint without one is a WeightsError."""
    pool_path = os.path.join(path, PAIR_POOL_FILE)
    if not os.path.isfile(pool_path):
        raise WeightsError(f"Checkpoint '{path}' holds no training-pair pool ({PAIR_POOL_FILE}): it was written by a "
                           "run without on-the-fly degradation, so it cannot resume this one; start the run afresh.")
    return torch.load(pool_path, weights_only=True)


def list_checkpoints(output_dir: str) -> list[str]:
    """Checkpoint folders under output_dir/checkpoints, oldest first."""
    root = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(root) if (m := _NAME.match(name))]
    return [os.path.join(root, name) for _, name in sorted(found)]


def resolve_resume(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """The checkpoint folder to resume from ("latest" = newest in output_dir), or None."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    if not os.path.isfile(os.path.join(resume_from_checkpoint, LORA_FILE)):
        raise ConfigError(
            f"resume_from_checkpoint '{resume_from_checkpoint}' is not a hypir-sweep checkpoint folder; "
            f"use 'latest' or a folder such as {os.path.join(output_dir, 'checkpoints', 'checkpoint-500')}."
        )
    return resume_from_checkpoint


def clear(output_dir: str) -> None:
    """Remove every checkpoint under output_dir (a new attempt starts from a checkpoint it is given)."""
    shutil.rmtree(os.path.join(output_dir, "checkpoints"), ignore_errors=True)


def rotate(output_dir: str, keep: int | None) -> None:
    """Delete the oldest checkpoints beyond ``keep``."""
    if keep is None:
        return
    for path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
