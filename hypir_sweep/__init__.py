"""hypir_sweep: hyperparameter sweeps over ``hypir_core.train`` with Ray Tune, Optuna (TPE) and ASHA.

    python launch.py sweeps/quickstart.yaml            # run
    python launch.py sweeps/quickstart.yaml --resume   # continue after an interruption

This package is the only one that imports Ray and Optuna; ``hypir_core`` knows nothing of them.
"""

from hypir_sweep.spec import SpecError, SweepSpec, load_spec

__all__ = ["SpecError", "SweepSpec", "load_spec"]
