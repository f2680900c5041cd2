"""Which SwanLab mode a run logs in (cloud, local, offline), valid project names, and how to see a run."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
from typing import Any

from hypir_core.errors import ConfigError

# SwanLab's own rule for project names (swanlab 0.10: 1-100 chars of these).
PROJECT_NAME = re.compile(r"^[0-9A-Za-z_\-+.]{1,100}$")


def validate_project_name(name: str, key: str = "swanlab_project") -> None:
    """Raise ConfigError unless `name` is a SwanLab project name (1-100 of A-Z a-z 0-9 _ - + .)."""
    if not isinstance(name, str) or not PROJECT_NAME.match(name):
        raise ConfigError(
            f"{key}: {name!r} is not a valid SwanLab project name; use 1-100 characters "
            "from letters, digits and _ - + . (for example 'HYPIR-training')."
        )


def sync_command(run_dir: str | os.PathLike) -> str:
    """The shell command that uploads an offline SwanLab run folder to the cloud."""
    return f"swanlab sync {shlex.quote(str(run_dir))}"


def watch_command(logdir: str | os.PathLike) -> str:
    """The shell command that opens SwanLab's dashboard on a folder of local-mode runs."""
    return f"swanlab watch {shlex.quote(str(logdir))}"


def swanlab_settings(swanlab: Any) -> Any:
    """SwanLab's settings as it resolves them now (env, saved login, swanlab.yaml)."""
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

    settings = swanlab_settings(swanlab)
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
