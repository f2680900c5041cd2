"""The SwanLab adapter: `make_tracker` starts a run in the mode `detect_swanlab_mode` picks; `SwanLabTracker` logs.

A tracker never stops training: a failure to start falls back to a `NullTracker` with a one-line
warning, and a failing `log`/`log_images`/`finish` is warned about once per kind and otherwise ignored.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import zlib
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from hypir_core.errors import ConfigError
from hypir_core.quiet import verbose
from hypir_core.tracking._local import LocalDashboard, swanlab_color
from hypir_core.tracking._modes import PROJECT_NAME, detect_swanlab_mode, swanlab_settings, sync_command, watch_command
from hypir_core.tracking._secrets import one_line, scrub_secrets, secret_values
from hypir_core.tracking._tracker import NullTracker, Tracker, checked_image, warn
from hypir_core.tracking._writes import WriteCounter, write_watcher

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


class SwanLabTracker(Tracker):
    """A live SwanLab run. Build it with `make_tracker`, not directly."""

    def __init__(self, run: Any, swanlab: Any, mode: str, secrets: set[str], writes: WriteCounter | None = None):
        self._run = run
        self._swanlab = swanlab
        self._writes = writes or WriteCounter()
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
        warn(
            f"SwanLab {kind} failed ({one_line(reason, self._secrets)}); training continues, "
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
                converted = [self._swanlab.Image(checked_image(key, a), caption=caption) for a in arrays]
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
            error = one_line(error, self._secrets, limit=2000)
        elif state == "crashed":
            error = f"training ended with status {status!r}"
        try:
            with swanlab_banner_hidden():
                self._run.finish(state=state, error=error)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop training
            self._warn_once("finish", f"{type(exc).__name__}: {exc}")


def _safe_attr(run: Any, name: str) -> Any:
    try:
        value = getattr(run, name)
    except Exception:  # noqa: BLE001 - swanlab raises for attributes a mode lacks
        return None
    return Path(value) if name == "dir" else value


@contextlib.contextmanager
def swanlab_banner_hidden() -> Iterator[None]:
    """While entered, a SwanLab run starting or finishing prints no banner (unless HYPIR_SWEEP_VERBOSE is set).

    SwanLab's banner (its version, the run folder, the sync or watch command, at start and again at the
    end) says what our one line after `swanlab.init` says; its warnings and errors still show.
    """
    try:
        from swanlab.sdk.internal.run import greeting
    except ImportError:  # another SwanLab layout: its banner shows, nothing else changes
        greeting = None
    if verbose() or greeting is None:
        yield
        return
    welcome, goodbye = greeting.welcome, greeting.goodbye
    greeting.welcome = greeting.goodbye = _print_nothing
    try:
        yield
    finally:
        greeting.welcome, greeting.goodbye = welcome, goodbye


def _print_nothing(*args: Any, **kwargs: Any) -> None:
    return None


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
    (`logdir/<experiment_name>` for a run of a `group`: a sweep's trials share `logdir`);
    "swanlab" a SwanLab run named `experiment_name` in `project` (and `group`, `tags`) in SwanLab `mode` (the
    config's swanlab_mode, see `detect_swanlab_mode`): cloud, or under `logdir` in
    local or offline mode. Runs of several processes may share one `logdir`. If
    SwanLab cannot start, one warning line says why and a NullTracker is returned;
    training goes on.
    """
    if report_to == "none":
        return NullTracker()
    if report_to == "tensorboard":
        from hypir_core.tracking._tensorboard import start_tensorboard

        return start_tensorboard(Path(logdir) / experiment_name if group else Path(logdir), experiment_name, config)
    if report_to != "swanlab":
        raise ConfigError(f"report_to: {report_to!r} is not supported; use 'swanlab', 'tensorboard' or 'none'.")
    secrets = secret_values(config)
    if os.environ.get("SWANLAB_API_KEY"):
        secrets.add(os.environ["SWANLAB_API_KEY"])
    try:
        import swanlab

        settings = swanlab_settings(swanlab)
        if settings.api_key:
            secrets.add(settings.api_key)
        requested = mode
        mode, reason = detect_swanlab_mode(requested)
        if requested != "auto" and mode not in (requested, "disabled"):
            warn(f"SwanLab {requested} mode cannot be used here: {reason}; logging {mode} instead.")
        if mode == "disabled":
            _say(f"SwanLab tracking is off: {reason}.")
            return NullTracker()
        if not PROJECT_NAME.match(project or ""):
            fixed = re.sub(r"[^0-9A-Za-z_\-+.]", "-", project or "hypir")[:100] or "hypir"
            warn(f"swanlab_project {project!r} has characters SwanLab does not allow; using {fixed!r}.")
            project = fixed
        safe_config = scrub_secrets(config, secrets)
        return _start_swanlab(
            swanlab, mode, reason, project, experiment_name, Path(logdir).absolute(), safe_config, group, tags, secrets
        )
    except Exception as exc:  # noqa: BLE001 - tracking must never stop training
        warn(
            f"SwanLab tracker could not start ({one_line(f'{type(exc).__name__}: {exc}', secrets)}); "
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
        warn("an earlier SwanLab run in this process was never finished; closing it as 'crashed'.")
        with swanlab_banner_hidden():
            swanlab.get_run().finish(state="crashed", error="a new run started before this one was finished")
    if mode == "cloud":
        try:
            # Log in before init so a failed login leaves no half-made run folder behind.
            swanlab.login()
        except Exception as exc:  # noqa: BLE001 - fall back to offline, keep the data
            warn(
                f"SwanLab cloud login failed ({one_line(f'{type(exc).__name__}: {exc}', secrets)}); "
                "logging offline instead."
            )
            mode, reason = "offline", "the cloud login failed"
    writes = WriteCounter()
    # Local mode: the dashboard callback counts what it has written (SwanLab calls it after ours).
    local = LocalDashboard(writes) if mode == "local" else nullcontext()
    with local, swanlab_banner_hidden():  # our lines below say where the run is and how to see it
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
            callbacks=None if mode == "local" else [write_watcher(swanlab, writes)],
            # SwanLab would draw the color from Python's global random state, which every trial seeds
            # alike: all trials one color. Local mode numbers them instead (distinct in a folder).
            color=swanlab_color(zlib.crc32(experiment_name.encode())),
        )
    if mode == "local" and not local.registered:
        writes = WriteCounter(counting=False)
    tracker = SwanLabTracker(run, swanlab, mode, secrets, writes)
    _say(f"Initialized SwanLab tracker: project={project}, experiment={experiment_name} ({mode})")
    if mode == "cloud" and tracker.url:
        _say(f"SwanLab run page: {tracker.url}")
    elif mode == "local":
        if local.error is not None:
            warn(
                f"SwanLab's local dashboard {one_line(local.error, secrets)}; "
                f"metrics are still logged to {tracker.run_dir}."
            )
        _say(f"SwanLab is logging locally to {tracker.run_dir}: {reason}. See it with: {watch_command(logdir)}")
    elif mode == "offline":
        _say(
            f"SwanLab is logging offline to {tracker.run_dir}: {reason}. "
            f"Upload later with: {sync_command(tracker.run_dir or logdir)}"
        )
    return tracker
