"""Where a sweep's SwanLab runs live, and the command that shows them in SwanLab's dashboard.

Every trial of a sweep on local or shared storage logs its SwanLab run into ``<sweep>/swanlog``.
In local mode (no API key, the dashboard extra installed) that folder is also one dashboard
database, and ``swanlab watch <sweep>/swanlog`` shows every trial, finished or running.
"""

from __future__ import annotations

import os

from hypir_core.tracking import DASHBOARD_DB, watch_command

SWANLOG = "swanlog"


def swanlog_dir(sweep_dir: str) -> str:
    """The folder all trials of the sweep in ``sweep_dir`` log their SwanLab runs to."""
    return os.path.join(sweep_dir, SWANLOG)


def dashboard_command(sweep_dir: str) -> str | None:
    """``swanlab watch <sweep>/swanlog`` when the sweep's trials logged in local mode, else None."""
    folder = swanlog_dir(sweep_dir)
    return watch_command(folder) if os.path.isfile(os.path.join(folder, DASHBOARD_DB)) else None


def print_dashboard_command(console, sweep_dir: str) -> None:
    """One line naming the command that opens the sweep in SwanLab's dashboard (nothing if it has none)."""
    command = dashboard_command(sweep_dir)
    if command:
        console.print(f"SwanLab dashboard of every trial: {command}", markup=False, soft_wrap=True)
