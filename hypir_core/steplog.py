"""Each step's losses, kept on the device and read every few steps in one transfer.

Reading a GPU number on the host (``.item()``, ``float()``, an ``if`` on a tensor) waits for the GPU to
finish everything queued, so the host can no longer run ahead and the GPU idles while it catches up.
The trainer therefore keeps each step's loss terms as device tensors and reads all steps since the
last read at once: every ``loss_read_steps`` steps, and before anything that needs them (validation,
a checkpoint, logged images). Every step is still logged at its own step; a NaN/inf loss is found at
the read and reported with the step where it first appeared.
"""

from __future__ import annotations

import math

import torch

# The losses whose NaN/inf ends a run as diverged (each is the sum of the terms of its step).
DIVERGENCE_KEYS = ("loss/G_total", "loss/D")


class StepLosses:
    """Device-side per-step logs since the last ``read``."""

    def __init__(self, read_every: int):
        self.read_every = read_every
        self._pending: list[tuple[int, list[str], torch.Tensor]] = []

    def add(self, step: int, logs: dict[str, torch.Tensor]) -> None:
        """Keep one step's logs (0-d tensors), stacked on their device: no transfer yet."""
        names = list(logs)
        self._pending.append((step, names, torch.stack([logs[n].detach().float() for n in names])))

    def due(self, step: int) -> bool:
        """Whether ``step`` is a regular read step."""
        return step % self.read_every == 0

    def read(self) -> tuple[list[tuple[int, dict[str, float]]], int | None]:
        """(each pending step's logs as numbers, the first step with a NaN/inf loss or None); one transfer."""
        if not self._pending:
            return [], None
        values = torch.cat([stacked for _, _, stacked in self._pending]).tolist()
        rows, offset = [], 0
        for step, names, _ in self._pending:
            rows.append((step, dict(zip(names, values[offset:offset + len(names)]))))
            offset += len(names)
        self._pending.clear()
        bad = next((step for step, logs in rows
                    if any(not math.isfinite(logs[k]) for k in DIVERGENCE_KEYS if k in logs)), None)
        return rows, bad
