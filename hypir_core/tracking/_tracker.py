"""The interface the trainer logs through; this base, and NullTracker, record nothing."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

import numpy as np


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
