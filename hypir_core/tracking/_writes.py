"""Counting the records handed to SwanLab that it has not written yet (what `Tracker.flush` waits for)."""

from __future__ import annotations

import threading
from typing import Any


class WriteCounter:
    """Records handed to SwanLab and not yet written by it; `wait` blocks until none are left."""

    def __init__(self, counting: bool = True) -> None:
        self._changed = threading.Condition()
        self._pending = 0
        self._counting = counting  # False: nothing reports writes back, so never wait

    def logged(self, count: int) -> None:
        """`count` records were handed to SwanLab."""
        with self._changed:
            self._pending += count if self._counting else 0

    def written(self, count: int) -> None:
        """SwanLab is done with `count` records (written, or failed for good)."""
        with self._changed:
            self._pending = max(0, self._pending - count)
            self._changed.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait until every record handed over is written; False if `timeout` seconds passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pending == 0, timeout)


def write_watcher(swanlab: Any, writes: WriteCounter) -> Any:
    """A SwanLab callback counting the records SwanLab has written (it calls these after writing them)."""

    class WriteWatcher(swanlab.Callback):
        @property
        def name(self) -> str:
            return "hypir-write-watcher"

        def on_scalar_flush(self, scalar_records: list, *args: Any, **kwargs: Any) -> None:
            writes.written(len(scalar_records))

        def on_media_flush(self, media_records: list, *args: Any, **kwargs: Any) -> None:
            writes.written(len(media_records))

    return WriteWatcher()
