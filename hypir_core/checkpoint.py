"""Checkpoints through accelerate's save_state/load_state, holding only what training changes.

A checkpoint folder ``checkpoints/checkpoint-<step>`` holds the LoRA weights, the discriminator heads,
both optimizers, the EMA, the training progress (step, data position, validation history) and the
RNG states, so a resumed run continues as the uninterrupted one would.
"""

from __future__ import annotations

import os
import re
import shutil

import torch

from hypir_core.errors import ConfigError

_NAME = re.compile(r"^checkpoint-(\d+)$")
LORA_FILE = "lora.pth"
DISC_FILE = "disc_heads.pth"


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


def rotate(output_dir: str, keep: int | None) -> None:
    """Delete the oldest checkpoints beyond ``keep``."""
    if keep is None:
        return
    for path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)
