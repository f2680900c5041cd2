"""The key reference and the editors' JSON Schemas, generated from the one declaration of every key.

    python -m hypir_sweep.reference          # rewrite docs/config-reference.md and docs/schema/*.schema.json
    python -m hypir_sweep.reference --check  # exit 1 if they are out of date (tests/test_config.py runs it)

The YAML files name their schema on their first line (``# yaml-language-server: $schema=...``), which
editors with the YAML language server (VS Code's YAML extension, ...) use to complete and check keys.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from hypir_core.config import Config, shown
from hypir_core.schema import adapter, allowed_words, file_keys, unwrap
from hypir_sweep.spec_schema import SweepSpec

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "docs" / "config-reference.md"
SCHEMAS = {ROOT / "docs" / "schema" / "config.schema.json": Config,
           ROOT / "docs" / "schema" / "sweep.schema.json": SweepSpec}
INTRO = """# Config and sweep spec reference

Every key of a training config (`configs/*.yaml`) and of a sweep spec (`sweeps/*.yaml`), generated from
their one declaration (`hypir_core/config.py`, `config_data.py`, `config_degradation.py`,
`hypir_sweep/spec_schema.py`) by
`python -m hypir_sweep.reference`; a test fails when this file is out of date. Editors complete and check
both kinds of file through the JSON Schemas in `docs/schema/` (the first line of each shipped YAML names
its schema). A key left out takes its default; *required* keys have none.
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _default(info: FieldInfo) -> str:
    if info.default is PydanticUndefined and info.default_factory is None:
        return "*required*"
    value = info.default_factory() if info.default_factory is not None else info.default
    return "" if value in ({}, ()) else f"`{shown(value)}`"


def _below(tp: Any) -> list[tuple[str, type, str]]:
    """The sections a key holds (itself, its items or its variants): (how their keys continue, section, label)."""
    args = [unwrap(a, []) for a in get_args(tp)]
    if dataclasses.is_dataclass(tp):
        return [(".", tp, "")]
    if get_origin(tp) is Union:  # the dataset's variants, each labelled by its class
        return [(".", a, f" ({a.__name__})") for a in args if dataclasses.is_dataclass(a)]
    item = args[-1] if get_origin(tp) is dict else args[0] if get_origin(tp) in (list, tuple) else None
    return [(".<key>." if get_origin(tp) is dict else "[i].", item, "")] if dataclasses.is_dataclass(item) else []


def rows(cls: type, prefix: str = "", label: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, default, allowed values, meaning) for every key of a section and the sections inside it."""
    out = []
    for name in file_keys(cls):
        info = cls.__pydantic_fields__[name]
        meta = list(info.metadata)
        below = _below(unwrap(info.annotation, meta))
        allowed = allowed_words(meta) or ("a mapping of keys (below)" if below else "")
        out.append((f"`{prefix}{name}`{label}", _default(info), allowed, info.description or ""))
        for suffix, section, variant in below:
            out += rows(section, prefix + name + suffix, variant or label)
    return out


def markdown() -> str:
    """The whole reference page."""
    parts = [INTRO]
    for title, cls in (("Training config", Config), ("Sweep spec", SweepSpec)):
        parts.append(f"\n## {title}\n\n| key | default | allowed | meaning |\n| --- | --- | --- | --- |\n")
        parts += [f"| {key} | {_cell(default)} | {_cell(allowed)} | {_cell(meaning)} |\n"
                  for key, default, allowed, meaning in rows(cls)]
    return "".join(parts)


def _tidy(node: Any) -> Any:
    """pydantic's schema without titles, and with null allowed for a nested section (null means its defaults)."""
    if isinstance(node, list):
        return [_tidy(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _tidy(v) for k, v in node.items() if k != "title"}
    if "$ref" in node and len(node) > 1:
        node = {"anyOf": [{"$ref": node.pop("$ref")}, {"type": "null"}], **node}
    return node


def json_schema(cls: type) -> str:
    """The editors' JSON Schema of a YAML format."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **_tidy(adapter(cls).json_schema())}
    return json.dumps(schema, indent=1) + "\n"


def generated() -> dict[Path, str]:
    """Every generated file and its content."""
    return {REFERENCE: markdown(), **{path: json_schema(cls) for path, cls in SCHEMAS.items()}}


def main(argv: list[str] | None = None) -> int:
    """Write the generated files, or with --check say which are out of date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is out of date")
    args = parser.parse_args(argv)
    stale = [path for path, text in generated().items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is out of date; run python -m hypir_sweep.reference", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generated()[path])
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
