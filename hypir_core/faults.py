"""One documented fault-injection hook, for testing faults that cannot be caused for real on demand.

Set ``HYPIR_SWEEP_FAULT`` to a comma-separated list of ``<fault>:<step>``; each fault fires once,
at the named global step, in whichever run or trial gets there first:

| fault                      | fires                                         | what happens                        |
| -------------------------- | --------------------------------------------- | ----------------------------------- |
| ``oom``                    | at the start of that training step            | ``torch.OutOfMemoryError``          |
| ``error``                  | at the start of that training step            | ``RuntimeError`` (a crashing trial) |
| ``enospc``                 | writing the checkpoint of that step           | ``OSError(ENOSPC)``, as a full disk |
| ``kill-trial``             | at the start of that step, in a sweep trial   | SIGKILL of the trial's own process  |
| ``kill-driver``            | at the start of that step, in a sweep trial   | SIGKILL of the sweep's driver       |
| ``kill-driver-persisting`` | as a trial hands that step's checkpoint to Tune | SIGKILL of the sweep's driver     |
| ``kill-driver-pruned``     | once the study records a trial stopped early at that step | SIGKILL of the driver |
| ``slow-end``               | as a sweep trial that Tune stopped at that step ends | it takes 30 s more to end |
| ``slow-save``              | as Tune takes a trial's state after that step's round | 10 s more (once per trial) |

"Once" is recorded as a marker file in ``HYPIR_SWEEP_FAULT_DIR`` (a sweep sets it to its own
folder, a single run uses its ``output_dir``), so a retried trial or a resumed sweep does not meet
the same fault again. Without ``HYPIR_SWEEP_FAULT`` every call here is a dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import signal

ENV, DIR_ENV, DRIVER_ENV = "HYPIR_SWEEP_FAULT", "HYPIR_SWEEP_FAULT_DIR", "HYPIR_SWEEP_DRIVER_PID"
FAULTS = ("oom", "error", "enospc", "kill-trial", "kill-driver", "kill-driver-persisting", "kill-driver-pruned",
          "slow-end", "slow-save")
SLOW_END_S, SLOW_SAVE_S = 30.0, 10.0
_AT = {"step": ("oom", "error", "kill-trial", "kill-driver"), "checkpoint": ("enospc",),
       "report": ("kill-driver-persisting",), "pruned": ("kill-driver-pruned",), "stopped": ("slow-end",),
       "save": ("slow-save",)}


def planned() -> dict[str, set[int]]:
    """The faults named in ``HYPIR_SWEEP_FAULT``: {fault: {steps}}; a malformed entry is an error."""
    plan: dict[str, set[int]] = {}
    for item in filter(None, (part.strip() for part in os.environ.get(ENV, "").split(","))):
        fault, _, step = item.partition(":")
        if fault not in FAULTS or not step.isdigit():
            raise ValueError(f"{ENV} entry '{item}' must be <fault>:<step> with a fault of {', '.join(FAULTS)}, "
                             f"e.g. oom:12.")
        plan.setdefault(fault, set()).add(int(step))
    return plan


def _claim(fault: str, step: int, default_dir: str | None, trial: str = "") -> bool:
    """True the first time (fault, step[, trial]) is claimed in the marker folder; False ever after."""
    folder = os.environ.get(DIR_ENV) or default_dir or "."
    os.makedirs(folder, exist_ok=True)
    name = f".fault-{fault}-{step}" + (f"-{trial}" if trial else "")
    try:
        os.close(os.open(os.path.join(folder, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def fire(point: str, step: int, default_dir: str | None = None, path: str = "", trial: str = "") -> None:
    """Raise, kill or stall as planned for ``point`` ("step", "checkpoint", "report", "pruned", "stopped" or
    "save") at ``step``; else nothing. ``trial`` (for "save") makes the fault fire once per trial.

    A kill fault outside a sweep (no driver to kill, or a single run) does nothing but use up the fault.
    """
    if ENV not in os.environ:
        return
    plan = planned()
    for fault in _AT[point]:
        if step not in plan.get(fault, ()) or not _claim(fault, step, default_dir, trial):
            continue
        if fault == "oom":
            import torch

            raise torch.OutOfMemoryError(f"CUDA out of memory (injected by {ENV} at step {step}).")
        if fault == "error":
            raise RuntimeError(f"injected failure at step {step} ({ENV})")
        if fault == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + f" (injected by {ENV})", path)
        if fault == "slow-end":
            import time

            time.sleep(SLOW_END_S)
        if fault == "slow-save":
            import time

            time.sleep(SLOW_SAVE_S)
        if fault == "kill-trial":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault.startswith("kill-driver") and os.environ.get(DRIVER_ENV):
            os.kill(int(os.environ[DRIVER_ENV]), signal.SIGKILL)
