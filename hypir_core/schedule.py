"""Staged training: config values that change at given steps, as the users' guide stages training by hand.

A training config's ``schedule`` lists ``{from_step: S, overrides: {key: value}}``: from global step S on
(the first step trained with them), those values replace the config's. Only what the trainer can change
mid-run may be scheduled: the learning rates, the loss weights, weight decay and gradient clipping.
Entries accumulate: a later entry changes only the keys it names.

    schedule:
      - {from_step: 2001, overrides: {lambda_gan: 0.5, lambda_lpips: 5}}
      - {from_step: 4001, overrides: {lr_G: 5.0e-6, lr_D: 2.5e-6}}

A population-based-training sweep exports its winner's history in this form (``best_schedule.yaml``).
"""

from __future__ import annotations

from typing import Any

# Keys a schedule may change: the trainer applies them to the optimizers and the loss at any step.
MUTABLE = ("lr_G", "lr_D", "lambda_gan", "lambda_lpips", "lambda_l2", "lambda_l1", "lambda_ssim",
           "opt_kwargs.weight_decay", "max_grad_norm")


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """{"opt_kwargs": {"weight_decay": 0}} -> {"opt_kwargs.weight_decay": 0}."""
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def structure_error(value: Any) -> str | None:
    """Why ``value`` is not a list of {from_step, overrides} entries with mutable keys, or None if it is."""
    if not isinstance(value, list):
        return "a list of {from_step: <step>, overrides: {<key>: <value>}} entries"
    for index, entry in enumerate(value):
        if not isinstance(entry, dict) or set(entry) != {"from_step", "overrides"}:
            return f"entries with exactly from_step and overrides (entry {index} is not)"
        step = entry["from_step"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            return f"entries whose from_step is an integer >= 1 (entry {index} has {step!r})"
        if not isinstance(entry["overrides"], dict) or not entry["overrides"]:
            return f"entries whose overrides map config keys to values (entry {index} has {entry['overrides']!r})"
        unknown = [k for k in flatten(entry["overrides"]) if k not in MUTABLE]
        if unknown:
            return (f"entries that change only {', '.join(MUTABLE)} (entry {index} changes {', '.join(unknown)}, "
                    f"which cannot change mid-run)")
    steps = [entry["from_step"] for entry in value]
    if steps != sorted(set(steps)):
        return f"entries in increasing from_step order, each step once (got {steps})"
    return None


def normalised(value: list) -> list[dict]:
    """The schedule with dotted override keys, as ``values_at`` and saved configs use it."""
    return [{"from_step": entry["from_step"], "overrides": flatten(entry["overrides"])} for entry in value]


def values_at(cfg, step: int) -> dict[str, Any]:
    """The mutable values in effect at global ``step``: the config's, then every entry with from_step <= step."""
    values = {key: read(cfg, key) for key in MUTABLE}
    for entry in cfg.schedule:
        if entry["from_step"] <= step:
            values.update(entry["overrides"])
    return values


def read(cfg, dotted: str) -> Any:
    """The value of dotted key ``a.b.c`` in a config; a number after a list names its element (``noise_range.1``)."""
    node = cfg
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) and part.isdigit() else getattr(node, part)
    return node
