"""Dependency output that tells our users nothing, stopped where it starts; HYPIR_SWEEP_VERBOSE=1 keeps all of it.

- bitsandbytes: peft and diffusers import it whenever it is installed (pyiqa requires it), and on a
  CPU its import prints "Failed to load CPU gemm_4bit_forward from kernels-community ..." in every
  run and trial process. Nothing here quantizes, so `keep_unused_libraries_out` (run when
  hypir_core is imported) makes it unimportable: peft, diffusers and transformers then take their own
  "not installed" path.
- transformers' "Loading weights" bar for every model it loads: `hide_weight_loading_bars`.
- SwanLab's start and end banner (version, run folder, the sync or watch command, twice per run):
  hidden by `hypir_core.tracking`, which prints the same in one line of its own.
"""

from __future__ import annotations

import os
import sys

VERBOSE_ENV = "HYPIR_SWEEP_VERBOSE"
UNUSED_LIBRARIES = ("bitsandbytes",)


def verbose() -> bool:
    """Whether dependency output is wanted as is (HYPIR_SWEEP_VERBOSE set to anything but "" or "0")."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def keep_unused_libraries_out() -> None:
    """Make the libraries this project never uses unimportable in this process (unless verbose or already imported).

    A None entry in sys.modules is Python's own "not importable" mark: `import` raises ImportError and
    `importlib.util.find_spec` answers None, which is how peft and diffusers test for bitsandbytes.
    """
    if verbose():
        return
    for name in UNUSED_LIBRARIES:
        sys.modules.setdefault(name, None)


def hide_weight_loading_bars() -> None:
    """Hide the "Loading weights" bar transformers draws for each model it loads; its download bars stay."""
    if verbose():
        return
    from transformers.utils import logging as transformers_logging

    set_hook = getattr(transformers_logging, "set_tqdm_hook", None)  # transformers >= 5
    if set_hook is None:
        return

    def hook(factory, args, kwargs):
        if kwargs.get("desc") == "Loading weights":
            kwargs = {**kwargs, "disable": True}
        return factory(*args, **kwargs)

    set_hook(hook)
