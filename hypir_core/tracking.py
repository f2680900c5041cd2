"""Experiment tracking behind one small interface; SwanLab is imported only here.

`make_tracker(report_to, ...)` returns a `Tracker` with `log`, `log_images` and
`finish`. `report_to: none` gives a `NullTracker`. `report_to: swanlab` logs in one of
SwanLab's modes: cloud (an API key is configured: env `SWANLAB_API_KEY` or a saved
`swanlab login`), local (runs under `logdir` shown by `swanlab watch <logdir>`; needs
the dashboard extra) or offline (runs under `logdir` to upload later with
`swanlab sync <run_dir>`). Mode "auto" picks cloud, else local, else offline.

Local mode keeps one dashboard database per folder, and a sweep's trials write to one
folder from several processes at once: every dashboard write here holds a lock on the
folder (SwanLab's own local mode loses experiments and charts to such races).

`Tracker.flush()` waits until SwanLab has written what was logged: a sweep calls it before
reporting a round, since Ray Tune may end the trial's process right after (early stopping).

A tracker never stops training: a failure to start falls back to a `NullTracker`
with a one-line warning, and a failing `log`/`log_images`/`finish` is warned about
once per kind and otherwise ignored. Config keys that look like credentials are
redacted before SwanLab sees the config, and the API key is never printed.

`read_offline_metrics(run_dir)` reads the scalars of an offline run back with
SwanLab's own record reader (the one `swanlab sync` uses).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import sqlite3
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # Windows: no flock; local mode there is for one process at a time
    fcntl = None

from hypir_core.errors import ConfigError, DataError

__all__ = [
    "REDACTED",
    "NullTracker",
    "SwanLabTracker",
    "Tracker",
    "detect_swanlab_mode",
    "local_mode_available",
    "make_tracker",
    "read_offline_metrics",
    "read_offline_run_info",
    "scrub_secrets",
    "sync_command",
    "validate_project_name",
    "watch_command",
]

REDACTED = "<redacted>"
# Config keys whose values must never reach a tracker (matched anywhere in the key, any case).
_SECRET_KEY = re.compile(r"api[_-]?key|token|passw(or)?d|secret", re.IGNORECASE)
# SwanLab's own rule for project names (swanlab 0.10: 1-100 chars of these).
_PROJECT_NAME = re.compile(r"^[0-9A-Za-z_\-+.]{1,100}$")
# SwanLab's finish states, plus the words a trainer or scheduler might use for them.
_FINISH_STATES = {
    "success": "success",
    "finished": "success",
    "crashed": "crashed",
    "failed": "crashed",
    "error": "crashed",
    "aborted": "aborted",
    "interrupted": "aborted",
    "stopped": "aborted",
    "killed": "aborted",
}


def _say(message: str) -> None:
    print(message, file=sys.stdout, flush=True)


def _warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr, flush=True)


def _one_line(text: str, secrets: set[str], limit: int = 300) -> str:
    """An exception message as one short line with any known secret blanked out."""
    for secret in secrets:
        if len(secret) >= 4:  # blanking a 1-3 character "secret" would only garble the message
            text = text.replace(secret, REDACTED)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


class SwanLabTracker(Tracker):
    """A live SwanLab run. Build it with `make_tracker`, not directly."""

    def __init__(self, run: Any, swanlab: Any, mode: str, secrets: set[str], writes: _WriteCounter | None = None):
        self._run = run
        self._swanlab = swanlab
        self._writes = writes or _WriteCounter()
        self._secrets = secrets
        self._warned: set[str] = set()
        self._finished = False
        self.mode = mode
        self.run_dir = _safe_attr(run, "dir")
        self.url = _safe_attr(run, "url") if mode == "cloud" else None

    def _warn_once(self, kind: str, reason: str) -> None:
        # A failing tracker would otherwise print the same warning every step.
        if kind in self._warned:
            return
        self._warned.add(kind)
        _warn(
            f"SwanLab {kind} failed ({_one_line(reason, self._secrets)}); training continues, "
            f"later {kind} failures are not shown."
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar metrics at a step; a SwanLab run keeps one value per key and step."""
        if self._finished:
            self._warn_once("log", "the tracker is already finished")
            return
        values: dict[str, float] = {}
        bad: list[str] = []
        for key, value in metrics.items():
            try:
                values[key] = float(value)
            except (TypeError, ValueError):
                bad.append(f"{key}={value!r}")
        if bad:
            self._warn_once("log", f"not numbers, skipped: {', '.join(bad)}")
        if not values:
            return
        try:
            self._run.log(values, step=int(step))
            self._writes.logged(len(values))
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._warn_once("log", f"{type(exc).__name__}: {exc}")

    def log_images(
        self, images: dict[str, np.ndarray | list[np.ndarray]], step: int, caption: str | None = None
    ) -> None:
        """Record uint8 HxWx3 images (or lists of them) under their names at a step."""
        if self._finished:
            self._warn_once("log_images", "the tracker is already finished")
            return
        try:
            payload: dict[str, Any] = {}
            for key, value in images.items():
                arrays = value if isinstance(value, (list, tuple)) else [value]
                converted = [self._swanlab.Image(_check_image(key, a), caption=caption) for a in arrays]
                payload[key] = converted if isinstance(value, (list, tuple)) else converted[0]
            self._run.log(payload, step=int(step))
            self._writes.logged(len(payload))  # one media record per key
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._warn_once("log_images", f"{type(exc).__name__}: {exc}")

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until SwanLab has written every record logged so far (in local mode: into the dashboard too).

        SwanLab writes in a background thread, about half a second after the last log call.
        """
        if not self._finished and not self._writes.wait(timeout):
            self._warn_once("flush", f"SwanLab had not written everything after {timeout:g} s")

    def finish(self, status: str = "success", error: str | None = None) -> None:
        """End the run once; later calls do nothing. Unknown statuses count as "crashed"."""
        if self._finished:
            return
        self._finished = True
        state = _FINISH_STATES.get(str(status).lower())
        if state is None:
            self._warn_once("finish", f"unknown status {status!r}, recorded as 'crashed'")
            state = "crashed"
        if error is not None:
            error = _one_line(error, self._secrets, limit=2000)
        elif state == "crashed":
            error = f"training ended with status {status!r}"
        try:
            self._run.finish(state=state, error=error)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._warn_once("finish", f"{type(exc).__name__}: {exc}")


class _WriteCounter:
    """Records handed to SwanLab and not yet written by it; `wait` blocks until none are left."""

    def __init__(self, counting: bool = True) -> None:
        self._changed = threading.Condition()
        self._pending = 0
        self._counting = counting  # False: nothing reports writes back, so never wait

    def logged(self, count: int) -> None:
        with self._changed:
            self._pending += count if self._counting else 0

    def written(self, count: int) -> None:
        with self._changed:
            self._pending = max(0, self._pending - count)
            self._changed.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._pending == 0, timeout)


def _write_watcher(swanlab: Any, writes: _WriteCounter) -> Any:
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


def _safe_attr(run: Any, name: str) -> Any:
    try:
        value = getattr(run, name)
    except Exception:  # noqa: BLE001 - swanlab raises for attributes a mode lacks
        return None
    return Path(value) if name == "dir" else value


def _check_image(key: str, array: Any) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3 or 0 in array.shape:
        raise ValueError(f"image {key!r} must be a uint8 HxWx3 array, got {array.dtype} {array.shape}")
    return array


def sync_command(run_dir: str | os.PathLike) -> str:
    """The shell command that uploads an offline SwanLab run folder to the cloud."""
    return f"swanlab sync {shlex.quote(str(run_dir))}"


def watch_command(logdir: str | os.PathLike) -> str:
    """The shell command that opens SwanLab's dashboard on a folder of local-mode runs."""
    return f"swanlab watch {shlex.quote(str(logdir))}"


def scrub_secrets(config: Any, extra_secrets: set[str] | None = None) -> Any:
    """A copy of `config` safe to hand to a tracker.

    Values under keys named like an API key, token, password or secret are replaced
    by "<redacted>", and so is any string holding one of `extra_secrets`. Paths and
    tuples become strings and lists so the result is YAML-able.
    """
    secrets = {s for s in (extra_secrets or set()) if s}

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                str(k): REDACTED if _SECRET_KEY.search(str(k)) and v is not None else clean(v) for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str) and any(_holds_secret(value, s) for s in secrets):
            return REDACTED
        return value

    return clean(config)


def _holds_secret(text: str, secret: str) -> bool:
    # Short secrets only match exactly, so "pw" does not redact every word containing it.
    return text == secret or (len(secret) >= 8 and secret in text)


def _secret_values(config: Any) -> set[str]:
    """String values stored under secret-looking keys (to blank them out of messages)."""
    found: set[str] = set()
    if isinstance(config, dict):
        for k, v in config.items():
            if _SECRET_KEY.search(str(k)) and isinstance(v, str) and v:
                found.add(v)
            else:
                found |= _secret_values(v)
    elif isinstance(config, (list, tuple)):
        for v in config:
            found |= _secret_values(v)
    return found


def validate_project_name(name: str, key: str = "swanlab_project") -> None:
    """Raise ConfigError unless `name` is a SwanLab project name (1-100 of A-Z a-z 0-9 _ - + .)."""
    if not isinstance(name, str) or not _PROJECT_NAME.match(name):
        raise ConfigError(
            f"{key}: {name!r} is not a valid SwanLab project name; use 1-100 characters "
            "from letters, digits and _ - + . (for example 'HYPIR-training')."
        )


def _swanlab_settings(swanlab: Any) -> Any:
    try:  # includes a key from swanlab.login() earlier in this process
        from swanlab.sdk.internal.settings import create_settings

        return create_settings()
    except ImportError:
        return swanlab.Settings()


def local_mode_available() -> bool:
    """Whether SwanLab's local dashboard is installed (pip install -e '.[dashboard]')."""
    return importlib.util.find_spec("swanboard") is not None


def detect_swanlab_mode(requested: str = "auto") -> tuple[str, str]:
    """Which mode report_to: swanlab would use now, and why: ("cloud" | "local" | "offline" | "disabled", reason).

    `requested` is the config's swanlab_mode. SwanLab switched off in its own settings
    (`swanlab disabled` / SWANLAB_MODE=disabled) always wins. "auto" follows SwanLab's own
    mode setting (`swanlab offline|local` / SWANLAB_MODE) if there is one, else cloud when
    SwanLab finds an API key (env SWANLAB_API_KEY, or the one `swanlab login` saved), else
    local when the dashboard is installed, else offline. An explicit mode that cannot work
    here (cloud without a key, local without the dashboard) falls back the same way; the
    reason says so.
    """
    import swanlab

    settings = _swanlab_settings(swanlab)
    explicit = settings.mode if "mode" in settings.model_fields_set else None
    if explicit == "disabled":
        return "disabled", "SwanLab is switched off in its settings (swanlab disabled / SWANLAB_MODE=disabled)"
    why = f"swanlab_mode is {requested}"
    if requested == "auto" and explicit in ("offline", "local"):
        requested = explicit
        why = f"SwanLab is set to {explicit} mode in its settings (swanlab {explicit} / SWANLAB_MODE)"
    no_key = "no SwanLab API key was found (set SWANLAB_API_KEY or run `swanlab login`)"
    if requested == "cloud" and not settings.api_key:
        requested, no_key = "auto", f"swanlab_mode is cloud but {no_key}"
    if requested == "auto":
        if settings.api_key:
            return "cloud", "a SwanLab API key is configured"
        requested, why = "local", no_key
    if requested == "local" and not local_mode_available():
        return "offline", f"{why}, and SwanLab's local dashboard is not installed (pip install -e '.[dashboard]')"
    return requested, why


def make_tracker(
    report_to: str,
    project: str,
    experiment_name: str,
    logdir: str | os.PathLike,
    config: dict,
    group: str | None = None,
    tags: list[str] | None = None,
    mode: str = "auto",
) -> Tracker:
    """Start a tracker for one training run.

    report_to "none" gives a NullTracker; "tensorboard" event files under `logdir`
    (hypir_core.tensorboard_tracker); "swanlab" a SwanLab run named
    `experiment_name` in `project` (and `group`, `tags`) in SwanLab `mode` (the
    config's swanlab_mode, see `detect_swanlab_mode`): cloud, or under `logdir` in
    local or offline mode. Runs of several processes may share one `logdir`. If
    SwanLab cannot start, one warning line says why and a NullTracker is returned;
    training goes on.
    """
    if report_to == "none":
        return NullTracker()
    if report_to == "tensorboard":
        from hypir_core.tensorboard_tracker import start_tensorboard

        return start_tensorboard(logdir, experiment_name, config)
    if report_to != "swanlab":
        raise ConfigError(f"report_to: {report_to!r} is not supported; use 'swanlab', 'tensorboard' or 'none'.")
    secrets = _secret_values(config)
    if os.environ.get("SWANLAB_API_KEY"):
        secrets.add(os.environ["SWANLAB_API_KEY"])
    try:
        import swanlab

        settings = _swanlab_settings(swanlab)
        if settings.api_key:
            secrets.add(settings.api_key)
        requested = mode
        mode, reason = detect_swanlab_mode(requested)
        if requested != "auto" and mode not in (requested, "disabled"):
            _warn(f"SwanLab {requested} mode cannot be used here: {reason}; logging {mode} instead.")
        if mode == "disabled":
            _say(f"SwanLab tracking is off: {reason}.")
            return NullTracker()
        if not _PROJECT_NAME.match(project or ""):
            fixed = re.sub(r"[^0-9A-Za-z_\-+.]", "-", project or "hypir")[:100] or "hypir"
            _warn(f"swanlab_project {project!r} has characters SwanLab does not allow; using {fixed!r}.")
            project = fixed
        safe_config = scrub_secrets(config, secrets)
        return _start_swanlab(
            swanlab, mode, reason, project, experiment_name, Path(logdir).absolute(), safe_config, group, tags, secrets
        )
    except Exception as exc:  # noqa: BLE001 - tracking must never stop training
        _warn(
            f"SwanLab tracker could not start ({_one_line(f'{type(exc).__name__}: {exc}', secrets)}); "
            "training continues without tracking."
        )
        return NullTracker()


def _start_swanlab(
    swanlab: Any,
    mode: str,
    reason: str,
    project: str,
    experiment_name: str,
    logdir: Path,
    config: dict,
    group: str | None,
    tags: list[str] | None,
    secrets: set[str],
) -> SwanLabTracker:
    if swanlab.has_run():
        # One SwanLab run per process: a run left open by an earlier crashed trial blocks init.
        _warn("an earlier SwanLab run in this process was never finished; closing it as 'crashed'.")
        swanlab.get_run().finish(state="crashed", error="a new run started before this one was finished")
    if mode == "cloud":
        try:
            # Log in before init so a failed login leaves no half-made run folder behind.
            swanlab.login()
        except Exception as exc:  # noqa: BLE001 - fall back to offline, keep the data
            _warn(
                f"SwanLab cloud login failed ({_one_line(f'{type(exc).__name__}: {exc}', secrets)}); "
                "logging offline instead."
            )
            mode, reason = "offline", "the cloud login failed"
    writes = _WriteCounter()
    # Local mode: the dashboard callback counts what it has written (SwanLab calls it after ours).
    local = _LocalDashboard(writes) if mode == "local" else nullcontext()
    with local:
        run = swanlab.init(
            mode={"cloud": "online", "local": "local"}.get(mode, "offline"),
            project=project,
            name=experiment_name,
            group=group,
            tags=list(tags) if tags else None,
            config=config,
            log_dir=str(logdir),
            # CI and Ray workers have no stdin: never ask for a login.
            settings=swanlab.Settings(interactive=False),
            callbacks=None if mode == "local" else [_write_watcher(swanlab, writes)],
            # SwanLab would draw the color from Python's global random state, which every trial seeds
            # alike: all trials one color. Local mode numbers them instead (distinct in a folder).
            color=_swanlab_color(zlib.crc32(experiment_name.encode())),
        )
    if mode == "local" and not local.registered:
        writes = _WriteCounter(counting=False)
    tracker = SwanLabTracker(run, swanlab, mode, secrets, writes)
    _say(f"Initialized SwanLab tracker: project={project}, experiment={experiment_name} ({mode})")
    if mode == "cloud" and tracker.url:
        _say(f"SwanLab run page: {tracker.url}")
    elif mode == "local":
        if local.error is not None:
            _warn(
                f"SwanLab's local dashboard {_one_line(local.error, secrets)}; "
                f"metrics are still logged to {tracker.run_dir}."
            )
        _say(f"SwanLab is logging locally to {tracker.run_dir}: {reason}. See it with: {watch_command(logdir)}")
    elif mode == "offline":
        _say(
            f"SwanLab is logging offline to {tracker.run_dir}: {reason}. "
            f"Upload later with: {sync_command(tracker.run_dir or logdir)}"
        )
    return tracker


# ---------------------------------------------------------------------------
# Local mode: the trials of a sweep, in separate processes, sharing one dashboard folder
# ---------------------------------------------------------------------------

DASHBOARD_DB = "runs.swanlab"  # SwanLab's local dashboard database (SQLite) in a log folder
_DASHBOARD_LOCK = "runs.swanlab.lock"


class _FolderLock:
    """Exclusive use of a log folder's dashboard database, across processes (flock) and threads.

    SwanLab's local mode updates runs.swanlab with check-then-insert steps (the project, a unique
    experiment name, one chart per metric shared by all experiments). Processes doing them at the
    same time lose experiments and charts (bench/swanlab_local_writers.py measures it), so every
    dashboard write of a run holds this lock. Re-entrant within a process.
    """

    def __init__(self, folder: Path):
        self._path = folder / _DASHBOARD_LOCK
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    def __enter__(self) -> _FolderLock:
        self._thread_lock.acquire()
        try:
            if self._depth == 0 and fcntl is not None:
                fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth += 1
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor releases the flock
        self._thread_lock.release()


class _LocalDashboard:
    """While entered, `swanlab.init(mode="local")` gets a local-mode callback whose dashboard writes hold
    the folder lock. After it, `error` is why the run could not be registered in the dashboard (or None).
    """

    def __init__(self, writes: _WriteCounter) -> None:
        self.error: str | None = None
        self.writes = writes
        self.registered = False  # SwanLab built its local-mode callback from our class

    def __enter__(self) -> _LocalDashboard:
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


def _locked_callbacker(stock: type, dashboard: _LocalDashboard) -> type:
    class LockedLocalCallbacker(stock):
        """SwanLab's local-mode callback, each dashboard write under the folder lock."""

        _folder_lock: Any = None

        def _locked(self) -> Any:
            return self._folder_lock or nullcontext()

        def on_run_initialized(self, run_dir: Path, *args: Any, **kwargs: Any) -> None:
            dashboard.registered = True
            self._folder_lock = _FolderLock(Path(run_dir).parent)
            log_dir_before = os.environ.get("SWANLAB_LOG_DIR")
            try:
                with self._folder_lock:
                    self._color = _swanlab_color(_experiments_in(Path(run_dir).parent))
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


def _swanlab_color(index: int) -> str:
    from swanlab.utils import generate_color

    return generate_color(index)


# ---------------------------------------------------------------------------
# Reading an offline run back (what `swanlab sync` replays)
# ---------------------------------------------------------------------------


def _iter_records(run_dir: str | os.PathLike) -> Iterator[Any]:
    """Yield the protobuf records of a local SwanLab run, in the order they were written."""
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    files = sorted(Path(run_dir).glob("run-*.swanlab"))
    if not files:
        raise DataError(
            f"{run_dir}: no run-*.swanlab file here; pass the SwanLab run folder "
            "(the run-<date>-<id> folder inside the tracker's logdir)."
        )
    reader = DataStoreReader()
    reader.open(files[0])
    try:
        for raw in reader:  # stops at the last intact record of a crashed run
            record = Record()
            record.ParseFromString(raw)
            yield record
    finally:
        reader.close()


def read_offline_metrics(run_dir: str | os.PathLike) -> dict[str, list[tuple[int, float]]]:
    """Scalar metrics of a local SwanLab run: name -> [(step, value), ...] in logged order.

    Complete once the run is finished (SwanLab buffers writes while it runs).
    """
    metrics: dict[str, list[tuple[int, float]]] = {}
    for record in _iter_records(run_dir):
        if record.HasField("scalar"):
            scalar = record.scalar
            metrics.setdefault(scalar.key, []).append((int(scalar.step), float(scalar.value.number)))
    return metrics


def read_offline_run_info(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Project, experiment name, group, tags, image keys and final state of a local SwanLab run.

    state is "success", "crashed", "aborted", or None while the run has no finish record.
    """
    from swanlab.proto.swanlab.run.v1.run_pb2 import RunState

    states = {
        RunState.RUN_STATE_FINISHED: "success",
        RunState.RUN_STATE_CRASHED: "crashed",
        RunState.RUN_STATE_ABORTED: "aborted",
    }
    info: dict[str, Any] = {"state": None, "image_keys": []}
    for record in _iter_records(run_dir):
        if record.HasField("start"):
            start = record.start
            info.update(project=start.project, name=start.name, group=start.group or None, tags=list(start.tags))
        elif record.HasField("media") and record.media.key not in info["image_keys"]:
            info["image_keys"].append(record.media.key)
        elif record.HasField("finish"):
            info["state"] = states.get(record.finish.state, "crashed")
    return info
