"""Reading a sweep back in tests: Ray's own ResultGrid over the sweep folder (local, NFS or s3://).

Works on a finished sweep and on an interrupted one (whatever Ray's last state snapshot holds).
"""

from __future__ import annotations

from hypir_core.metrics import FINAL_SCORE


def load_results(sweep_dir: str, metric: str = FINAL_SCORE, mode: str = "max"):
    """The sweep's ``ray.tune.ResultGrid``, built from its experiment state without starting Ray."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    return ResultGrid(ExperimentAnalysis(str(sweep_dir), default_metric=metric, default_mode=mode))
