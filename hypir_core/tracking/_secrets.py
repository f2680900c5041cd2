"""Keeping credentials out of what a tracker stores and prints."""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "<redacted>"
# Config keys whose values must never reach a tracker (matched anywhere in the key, any case).
_SECRET_KEY = re.compile(r"api[_-]?key|token|passw(or)?d|secret", re.IGNORECASE)


def scrub_secrets(config: Any, extra_secrets: set[str] | None = None) -> Any:
    """A copy of `config` safe to hand to a tracker.

    Values under keys named like an API key, token, password or secret are replaced
    by "<redacted>", and so is any string holding one of `extra_secrets`. Paths and
    tuples become strings and lists so the result is YAML-able.
    """
    secrets = {s for s in (extra_secrets or set()) if s}

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                str(k): REDACTED if _SECRET_KEY.search(str(k)) and v is not None else clean(v) for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str) and any(_holds_secret(value, s) for s in secrets):
            return REDACTED
        return value

    return clean(config)


def _holds_secret(text: str, secret: str) -> bool:
    # Short secrets only match exactly, so "pw" does not redact every word containing it.
    return text == secret or (len(secret) >= 8 and secret in text)


def secret_values(config: Any) -> set[str]:
    """String values stored under secret-looking keys (to blank them out of messages)."""
    found: set[str] = set()
    if isinstance(config, dict):
        for k, v in config.items():
            if _SECRET_KEY.search(str(k)) and isinstance(v, str) and v:
                found.add(v)
            else:
                found |= secret_values(v)
    elif isinstance(config, (list, tuple)):
        for v in config:
            found |= secret_values(v)
    return found


def one_line(text: str, secrets: set[str], limit: int = 300) -> str:
    """An exception message as one short line with any known secret blanked out."""
    for secret in secrets:
        if len(secret) >= 4:  # blanking a 1-3 character "secret" would only garble the message
            text = text.replace(secret, REDACTED)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
