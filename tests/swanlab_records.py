"""Reading a local SwanLab run back, for tests: the records `swanlab sync` would upload, via SwanLab's own reader."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypir_core.errors import DataError


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
