"""What a trial asks for against what the machine or the Ray cluster can give, checked before anything starts.

On a fixed cluster (a local Ray, or one started with ``ray start``) a request that no node can meet
would wait forever, so it is refused in one sentence; on an autoscaling cluster (``ray up``) nodes
may still come, so it is a warning.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypir_sweep.spec import SpecError, SweepSpec


def check_gpus(spec: SweepSpec, cluster_gpus: float | None = None) -> None:
    """A spec asking for GPUs where there are none is an error before anything starts."""
    if spec.resources.gpu <= 0:
        return
    where = "this machine"
    if cluster_gpus is None:
        import torch

        cluster_gpus = torch.cuda.device_count()
    else:
        where = "the Ray cluster"
    if cluster_gpus < spec.resources.gpu:
        has = f"{where} has no GPU" if cluster_gpus == 0 else f"{where} has only {cluster_gpus:g}"
        raise SpecError(f"Sweep spec {spec.source} asks for resources.gpu: {spec.resources.gpu:g} per trial but "
                        f"{has}; set resources.gpu: 0 to train on CPU, or join a GPU cluster with --address.")


@dataclass(frozen=True)
class Node:
    cpu: float
    gpu: float


def local_node() -> Node:
    """This machine as the one node a local Ray would have."""
    import torch

    return Node(float(os.cpu_count() or 1), float(torch.cuda.device_count()))


def cluster_nodes() -> tuple[list[Node], list[Node] | None]:
    """(alive nodes of the connected Ray cluster, node types an autoscaler may add or None if it cannot)."""
    import ray

    alive = [Node(n["Resources"].get("CPU", 0.0), n["Resources"].get("GPU", 0.0)) for n in ray.nodes() if n["Alive"]]
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - a private API: without it, treat the cluster as fixed
        config = None
    groups = None
    if config is not None and config.node_group_configs:
        groups = [Node(g.resources.get("CPU", 0.0), g.resources.get("GPU", 0.0))
                  for g in config.node_group_configs if g.max_count != 0]
    return alive, groups


def check_fits(spec: SweepSpec, alive: list[Node], autoscaled: list[Node] | None) -> str | None:
    """Refuse a per-trial request that no node can hold; return a warning when only an autoscaler could."""
    cpu, gpu = spec.resources.cpu, spec.resources.gpu

    def fits(node: Node) -> bool:
        return node.cpu >= cpu and node.gpu >= gpu

    if any(fits(node) for node in alive):
        return None
    asked = f"{cpu:g} CPU" + (f" and {gpu:g} GPU" if gpu else "")
    have = ", ".join(f"{n.cpu:g} CPU/{n.gpu:g} GPU" for n in alive) or "no live node"
    if autoscaled is not None:
        if any(fits(node) for node in autoscaled):
            return (f"No running node has {asked} for one trial (nodes: {have}); the sweep waits until the "
                    f"autoscaler adds one.")
        return (f"Each trial of {spec.source} asks for {asked}, which no node type of this autoscaling cluster "
                f"offers; trials may never start. Lower resources in the spec.")
    raise SpecError(f"Each trial of {spec.source} asks for {asked}, but no node of this Ray cluster has that "
                    f"(nodes: {have}); lower resources.cpu / resources.gpu in the spec, or add a larger machine.")
