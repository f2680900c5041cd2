"""The project's terminal: rich output in which a message is always text, never markup.

Messages quote user values, paths and fixes such as ``pip install -e '.[openclip]'`` or
``degradation_types [Blur, Haze]``; rich would read the brackets as markup and drop them. Every console
here is made with ``markup=False`` (table cells and titles included), and colour is given as a style.
"""

from __future__ import annotations

from rich.console import Console

OK, WARN, BAD = "green", "yellow", "red"


def make_console(**kwargs) -> Console:
    """A console that prints every string as it is (paths and commands on one line, ready to copy)."""
    return Console(highlight=False, soft_wrap=True, markup=False, **kwargs)


def status_cell(ok: bool) -> tuple[str, str]:
    """(text, style) of a check's status column."""
    return ("ok", OK) if ok else ("FAILED", BAD)
