"""Local mode: the trials of a sweep, in separate processes, sharing one dashboard folder.

SwanLab's local mode updates a folder's dashboard database (runs.swanlab) with check-then-insert
steps (the project, a unique experiment name, one chart per metric shared by all experiments).
Processes doing them at the same time lose experiments and charts (bench/swanlab_local_writers.py
measures it), so while `LocalDashboard` is entered, `swanlab.init(mode="local")` builds its
local-mode callback from a subclass whose every dashboard write holds a lock on the folder.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from hypir_core.files import file_lock
from hypir_core.tracking._writes import WriteCounter

DASHBOARD_DB = "runs.swanlab"  # SwanLab's local dashboard database (SQLite) in a log folder
DASHBOARD_LOCK = "runs.swanlab.lock"
# Runs take the lock once per record (a few ms each): waiters that poll every 2 ms keep the folder
# within ~20% of a kernel-blocking lock's throughput, filelock's default 50 ms lost ~60%
# (bench/swanlab_local_writers.py --writers 4, BENCHMARKS.md).
LOCK_POLL_S = 0.002


class LocalDashboard:
    """While entered, `swanlab.init(mode="local")` gets a local-mode callback whose dashboard writes hold
    the folder lock. After it, `error` is why the run could not be registered in the dashboard (or None).
    """

    def __init__(self, writes: WriteCounter) -> None:
        self.error: str | None = None
        self.writes = writes
        self.registered = False  # SwanLab built its local-mode callback from our class

    def __enter__(self) -> LocalDashboard:
        import swanlab.deprecated.local as local_module

        self._module = local_module
        self._stock = local_module.LocalCallbacker
        # swanlab.init builds its local-mode callback from this module attribute at call time.
        local_module.LocalCallbacker = _locked_callbacker(self._stock, self)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._module.LocalCallbacker = self._stock
        if exc_info[0] is None and not self.registered and self.error is None:
            self.error = ("started without the folder lock (this SwanLab version builds its local-mode callback "
                          "elsewhere), so runs logging to one folder at once may lose charts")


def _locked_callbacker(stock: type, dashboard: LocalDashboard) -> type:
    class LockedLocalCallbacker(stock):
        """SwanLab's local-mode callback, each dashboard write under the folder lock.

        SwanLab calls it from the thread that started the run and from its writer thread; the lock lets
        one of them (and one process) write at a time, and the holding thread enter it again.
        """

        _folder_lock: Any = None

        def _locked(self) -> Any:
            return self._folder_lock or nullcontext()

        def on_run_initialized(self, run_dir: Path, *args: Any, **kwargs: Any) -> None:
            dashboard.registered = True
            self._folder_lock = file_lock(Path(run_dir).parent / DASHBOARD_LOCK, poll_interval=LOCK_POLL_S)
            log_dir_before = os.environ.get("SWANLAB_LOG_DIR")
            try:
                with self._folder_lock:
                    self._color = swanlab_color(_experiments_in(Path(run_dir).parent))
                    super().on_run_initialized(run_dir, *args, **kwargs)
            except Exception as exc:  # swanlab reports it too, then logs without the dashboard
                dashboard.error = f"could not register this run ({type(exc).__name__}: {exc})"
                raise
            finally:
                # It sets SWANLAB_LOG_DIR for the whole process; the run no longer needs it.
                if log_dir_before is None:
                    os.environ.pop("SWANLAB_LOG_DIR", None)
                else:
                    os.environ["SWANLAB_LOG_DIR"] = log_dir_before

        def _transaction(self) -> Any:
            if not self._dashboard_ready:
                return nullcontext()
            from swanboard.db.models import Experiment

            return Experiment._meta.database.atomic()

        def _handle_metric(self, *args: Any, **kwargs: Any) -> None:
            # One record at a time, so another run's finish never waits long for the lock (Ray ends a
            # stopped trial's process about 0.1 s after the stop); one transaction, so one commit.
            with self._locked(), self._transaction():
                super()._handle_metric(*args, **kwargs)

        def on_scalar_flush(self, scalar_records: list, *args: Any, **kwargs: Any) -> None:
            try:
                super().on_scalar_flush(scalar_records, *args, **kwargs)
            finally:  # done with them, written or not: Tracker.flush must not wait for a failed write
                dashboard.writes.written(len(scalar_records))

        def on_media_flush(self, media_records: list, *args: Any, **kwargs: Any) -> None:
            try:
                super().on_media_flush(media_records, *args, **kwargs)
            finally:
                dashboard.writes.written(len(media_records))

        def on_log_flush(self, *args: Any, **kwargs: Any) -> None:
            with self._locked():
                super().on_log_flush(*args, **kwargs)

        def on_run_finished(self, *args: Any, **kwargs: Any) -> None:
            with self._locked():
                super().on_run_finished(*args, **kwargs)

        def _normalize_colors(self, color: Any) -> tuple[str, str]:
            return (self._color, self._color) if getattr(self, "_color", None) else super()._normalize_colors(color)

        _status_checked = 0.0

        def _check_exp_status(self) -> None:
            # SwanLab asks the database before every record whether the dashboard stopped the run; once
            # a second is enough, and halves the CPU local mode costs per logged value.
            if time.monotonic() - self._status_checked < 1.0:
                return
            self._status_checked = time.monotonic()
            try:
                super()._check_exp_status()
            except KeyboardInterrupt:
                # Stopped or deleted in the dashboard: SwanLab would raise KeyboardInterrupt in its
                # writer thread; keep training and logging, stop updating the dashboard instead.
                self._dashboard_ready = False

    return LockedLocalCallbacker


def _experiments_in(folder: Path) -> int:
    """How many experiments a folder's dashboard database holds (0 before the first run)."""
    if not (folder / DASHBOARD_DB).is_file():
        return 0
    db = sqlite3.connect(f"file:{folder / DASHBOARD_DB}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("select count(*) from experiment").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def swanlab_color(index: int) -> str:
    """SwanLab's index-th chart color (runs of one folder get distinct ones)."""
    from swanlab.utils import generate_color

    return generate_color(index)
