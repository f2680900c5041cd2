"""The interface the trainer logs through; this base, and NullTracker, record nothing."""

from __future__ import annotations

import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np


def warn(message: str) -> None:
    """One warning line on stderr (trackers warn; they never stop training)."""
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def checked_image(key: str, array: Any) -> np.ndarray:
    """``array`` as a uint8 HxWx3 image, or a ValueError naming ``key``."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(f"image {key!r} must be a uint8 HxWx3 array, got {array.dtype} {array.shape}")
    return array


class Tracker:
    """Where the trainer sends metrics and images; this base records nothing.

    Attributes: `mode` is "cloud", "local", "offline" or "disabled"; `run_dir` is the local
    SwanLab run folder (None when disabled); `url` is the cloud page (None unless cloud).
    Usable as a context manager: leaving on an exception finishes as "crashed".
    """

    mode: str = "disabled"
    run_dir: Path | None = None
    url: str | None = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar metrics (name -> number) at a global step."""

    def log_images(
        self, images: dict[str, np.ndarray | list[np.ndarray]], step: int, caption: str | None = None
    ) -> None:
        """Record images (name -> uint8 HxWx3 array, or a list of them) at a global step."""

    def flush(self, timeout: float = 10.0) -> None:
        """Wait (at most `timeout` seconds) until everything logged so far is on disk."""

    def finish(self, status: str = "success", error: str | None = None) -> None:
        """End the run: status "success", "crashed" or "aborted" (error: optional reason)."""

    def __enter__(self) -> Tracker:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.finish("success")
        else:
            status = "aborted" if issubclass(exc_type, KeyboardInterrupt) else "crashed"
            self.finish(status, error=f"{exc_type.__name__}: {exc}")


class NullTracker(Tracker):
    """A tracker that records nothing (report_to: none, or SwanLab could not start)."""
