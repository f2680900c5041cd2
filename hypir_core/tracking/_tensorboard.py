"""``report_to: tensorboard`` (upstream HYPIR's choice): TensorBoard event files through the Tracker interface.

Scalars and images go to ``<output_dir>/<logging_dir>`` (``tensorboard --logdir`` on it shows them; a sweep's
trials each to their own subfolder of the sweep's log folder),
the config as a text entry with credential-like keys redacted, and how the run ended as the text entry
``status``. As with SwanLab, a failure to start or to write warns once and never stops training.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import yaml

from hypir_core.tracking._secrets import scrub_secrets
from hypir_core.tracking._tracker import NullTracker, Tracker, checked_image, warn


class TensorBoardTracker(Tracker):
    """A TensorBoard run: one event file under ``logdir``. Build it with `start_tensorboard`."""

    mode = "local"

    def __init__(self, writer: Any, logdir: str):
        self._writer = writer
        self._warned: set[str] = set()
        self._finished = False
        self.run_dir = logdir

    def _warn_once(self, kind: str, reason: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warn(f"TensorBoard {kind} failed ({reason}); training continues, later {kind} failures are not shown.")

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar metrics at a global step."""
        if self._finished:
            return
        try:
            for key, value in metrics.items():
                self._writer.add_scalar(key, float(value), global_step=int(step))
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._warn_once("log", f"{type(exc).__name__}: {exc}")

    def log_images(self, images: dict[str, np.ndarray | list[np.ndarray]], step: int,
                   caption: str | None = None) -> None:
        """Record uint8 HxWx3 images (a list becomes <name>/0, <name>/1, ...) at a global step."""
        if self._finished:
            return
        try:
            for key, value in images.items():
                arrays = value if isinstance(value, (list, tuple)) else [value]
                for index, array in enumerate(arrays):
                    name = key if len(arrays) == 1 else f"{key}/{index}"
                    self._writer.add_image(name, checked_image(key, array), global_step=int(step), dataformats="HWC")
        except Exception as exc:  # noqa: BLE001
            self._warn_once("log_images", f"{type(exc).__name__}: {exc}")

    def flush(self, timeout: float = 10.0) -> None:
        """Write everything logged so far to the event file."""
        if not self._finished:
            try:
                self._writer.flush()
            except Exception as exc:  # noqa: BLE001
                self._warn_once("flush", f"{type(exc).__name__}: {exc}")

    def finish(self, status: str = "success", error: str | None = None) -> None:
        """Record how the run ended and close the event file; later calls do nothing."""
        if self._finished:
            return
        self._finished = True
        try:
            self._writer.add_text("status", status if error is None else f"{status}: {error}")
            self._writer.close()
        except Exception as exc:  # noqa: BLE001
            self._warn_once("finish", f"{type(exc).__name__}: {exc}")


def start_tensorboard(logdir: str | os.PathLike, experiment_name: str, config: dict) -> Tracker:
    """A TensorBoardTracker writing under ``logdir`` (the config logged as text), or a NullTracker with a warning."""
    try:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(logdir))
        writer.add_text("config", "```\n" + yaml.safe_dump(scrub_secrets(config), sort_keys=False) + "```")
        writer.add_text("experiment", experiment_name)
        print(f"TensorBoard logs in {logdir}: tensorboard --logdir {logdir}", flush=True)
        return TensorBoardTracker(writer, str(logdir))
    except Exception as exc:  # noqa: BLE001 - tracking must never stop training (e.g. tensorboard not installed)
        warn(f"TensorBoard tracker could not start ({type(exc).__name__}: {exc}); training continues without "
              "tracking (pip install tensorboard).")
        return NullTracker()
