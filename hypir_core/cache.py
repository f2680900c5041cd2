"""Where hypir-sweep keeps what it builds itself (demo assets, offline metric weights)."""

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$HYPIR_SWEEP_CACHE``, or ``~/.cache/hypir-sweep``."""
    return Path(os.environ.get("HYPIR_SWEEP_CACHE") or Path.home() / ".cache" / "hypir-sweep")
