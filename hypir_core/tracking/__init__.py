"""Experiment tracking behind one small interface; SwanLab is imported only in this package.

`make_tracker(report_to, ...)` returns a `Tracker` with `log`, `log_images` and
`finish`. `report_to: none` gives a `NullTracker`; `report_to: tensorboard` (upstream HYPIR's)
TensorBoard event files under `logdir`. `report_to: swanlab` logs in one of
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

Modules, one job each: `_tracker` (the interface), `_swanlab` (the SwanLab adapter and
`make_tracker`), `_tensorboard` (the TensorBoard adapter), `_writes` (records not yet written, for
`flush`), `_secrets` (redaction), `_modes` (mode choice, project names, the sync/watch commands),
`_local` (the folder lock around SwanLab's local-mode dashboard writes).
"""

from hypir_core.tracking._local import DASHBOARD_DB
from hypir_core.tracking._modes import (
    detect_swanlab_mode,
    local_mode_available,
    sync_command,
    validate_project_name,
    watch_command,
)
from hypir_core.tracking._secrets import REDACTED, scrub_secrets
from hypir_core.tracking._swanlab import SwanLabTracker, make_tracker
from hypir_core.tracking._tracker import NullTracker, Tracker

__all__ = [
    "DASHBOARD_DB",
    "REDACTED",
    "NullTracker",
    "SwanLabTracker",
    "Tracker",
    "detect_swanlab_mode",
    "local_mode_available",
    "make_tracker",
    "scrub_secrets",
    "sync_command",
    "validate_project_name",
    "watch_command",
]
