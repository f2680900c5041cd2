"""One schema mechanism for both YAML formats (training configs, sweep specs): pydantic and one error formatter.

Each key is declared once, as a field of a ``@section`` class: ``lora_rank: Int(ge=1) = key(256, "LoRA rank")``.
The type helpers (``Int``, ``Number``, ``Flag``, ``Text``, ``Choice``, ``Texts``) carry the check, the JSON
Schema and the "allowed" words that messages quote. ``validate`` runs pydantic and turns its first error into
one sentence naming the dotted key, the file, the value and what is allowed (did-you-mean for unknown keys).
Sections are pydantic dataclasses, so ``dataclasses.replace`` works on them and re-validates.
"""

import copy
import dataclasses
import difflib
import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, Optional, TypeVar, Union, get_args, get_origin

import annotated_types as at
import pydantic
import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, Strict, Tag, TypeAdapter, ValidationInfo
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from hypir_core.errors import ConfigError

T = TypeVar("T")
# A mapping of keys: every key declared, unknown ones refused.
section = functools.partial(pydantic.dataclasses.dataclass, frozen=True, kw_only=True,
                            config=ConfigDict(extra="forbid"))


@dataclasses.dataclass(frozen=True)
class Allowed:
    """What a key accepts, in the words a message uses ("an integer >= 1")."""

    text: str


@dataclasses.dataclass(frozen=True)
class Says:
    """The whole sentence for a key that is missing (``missing_only``) or anything else than allowed.

    ``render(key, where)`` gets the dotted key and ``where(key)``, the file (and override) that set a key.
    """

    render: Callable[[str, Callable[[str], str]], str]
    missing_only: bool = False


def says(template: str, missing_only: bool = False) -> Says:
    """A ``Says`` sentence from a template with {key}, {parent} (the key's section) and {where} in it."""
    return Says(lambda k, where: template.format(key=k, parent=k.rpartition(".")[0], where=where(k)), missing_only)


def show_value(value: Any) -> str:
    """A value as messages quote it: repr (shortened) and its type."""
    if value is None:
        return "null"
    text = repr(value)
    return f"{text[:77] + '...' if len(text) > 80 else text} ({type(value).__name__})"


def parse_number(value: Any) -> float:
    """The one float parser: numbers and numeric strings (PyYAML reads ``1e-5`` as a string); no bool, inf, nan."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise PydanticCustomError("number", "not a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PydanticCustomError("number", "not a number")
    return float(value)


def _range(ge=None, gt=None, le=None, lt=None) -> str:
    lo, hi = ge if gt is None else gt, le if lt is None else lt
    if lo is not None and hi is not None:
        return f" in {'[' if gt is None else '('}{lo}, {hi}{']' if lt is None else ')'}"
    if lo is not None:
        return f" {'>=' if gt is None else '>'} {lo}"
    return "" if hi is None else f" {'<=' if lt is None else '<'} {hi}"


def _declared(tp: Any, allowed: str, null: str | None = None) -> Any:
    """``tp`` with its allowed words; ``null``: None = not nullable, "" = "or null", text = "or null (text)"."""
    if null is not None:
        tp, allowed = Optional[tp], f"{allowed} or null" + (f" ({null})" if null else "")
    return Annotated[tp, Allowed(allowed)]


def Int(ge=None, le=None, *, gt=None, allowed: str | None = None, null: str | None = None) -> Any:  # noqa: N802
    """An integer key (true, 2.0 and "2" are refused)."""
    return _declared(Annotated[int, Strict(), at.Interval(ge=ge, gt=gt, le=le)],
                     allowed or "an integer" + _range(ge, gt, le), null)


def Number(ge=None, gt=None, le=None, lt=None) -> Any:  # noqa: N802
    """A number key; numeric strings count (see ``parse_number``)."""
    return _declared(Annotated[float, at.Interval(ge=ge, gt=gt, le=le, lt=lt), BeforeValidator(parse_number)],
                     "a number" + _range(ge, gt, le, lt))


def Flag() -> Any:  # noqa: N802
    """A true/false key ("true" as a string is refused)."""
    return _declared(Annotated[bool, Strict()], "true or false")


def Text(*, empty_ok=False, allowed: str | None = None, null: str | None = None,  # noqa: N802
         pattern: str | None = None) -> Any:
    """A string key: non-empty unless ``empty_ok``, matching ``pattern`` if given."""
    return _declared(Annotated[str, Strict(), pydantic.StringConstraints(min_length=0 if empty_ok else 1,
                                                                         pattern=pattern)],
                     allowed or ("a string" if empty_ok else "a non-empty string"), null)


def Choice(*options: str, note: str = "") -> Any:  # noqa: N802
    """One of the given strings."""
    return _declared(Literal[options], "one of " + ", ".join(options) + note)


def Texts(*, empty_ok=False, allowed: str | None = None) -> Any:  # noqa: N802
    """A list of non-empty strings (non-empty itself unless ``empty_ok``)."""
    item = Annotated[str, Strict(), at.MinLen(1)]
    return _declared(Annotated[list[item], at.MinLen(0 if empty_ok else 1)],
                     allowed or ("a list of strings" if empty_ok else "a non-empty list of strings"))


def _none_is_empty(value: Any) -> Any:
    return {} if value is None else value


def _not_in_file(value: Any, info: ValidationInfo) -> Any:
    if info.context and info.context.get("file"):
        raise PydanticCustomError("unexpected_keyword_argument", "filled in by the loader, not a key")
    return value


class _Derived:
    """Marks a field that the loader fills in (a file cannot set it)."""


# A section inside a section: a missing or null one means all its defaults.
Nested = Annotated[T, BeforeValidator(_none_is_empty)]
Derived = Annotated[T, AfterValidator(_not_in_file), SkipJsonSchema(), _Derived()]


def key(default: Any = ..., meaning: str = "") -> Any:
    """A key's default (``...``: required) and its one-line meaning (the reference and JSON Schema show it)."""
    if isinstance(default, (list, dict, tuple)):  # a fresh copy each time (and no JSON Schema default)
        return Field(default_factory=lambda: copy.deepcopy(default), description=meaning)
    return Field(default, description=meaning)


def nested(meaning: str) -> Any:
    """A ``Nested`` section's field: its keys' defaults when the file leaves it out."""
    return Field(default_factory=dict, validate_default=True, description=meaning)


def must(value: T, ok: bool) -> T:
    """Inside a validator: ``value`` if ``ok``, else refused (the message quotes the key's allowed words)."""
    if not ok:
        raise ValueError("not allowed")
    return value


def refuse(allowed: str) -> NoReturn:
    """Inside a validator: the value is not ``allowed`` (the message names the key, the file and the value)."""
    raise PydanticCustomError("refused", "{allowed}", {"allowed": allowed})


def refuse_with(render: Callable[[str, Callable[[str], str]], str]) -> NoReturn:
    """Inside a validator: refuse the value with a whole sentence, ``render(key, where)`` as for ``Says``."""
    raise PydanticCustomError("sentence", "{render}", {"render": render})


def is_derived(info: Any) -> bool:
    """Whether a field is filled in by the loader rather than read from the file."""
    return any(isinstance(m, _Derived) for m in getattr(info, "metadata", ()))


def file_keys(cls: type) -> list[str]:
    """The keys a file may write in a section, in declaration order."""
    return [name for name, info in cls.__pydantic_fields__.items() if not is_derived(info)]


# ---- validation and the one error formatter ----

class Source:
    """Where values come from, for messages: the file's name and which dotted keys an override set (key -> text)."""

    def __init__(self, name: str, overridden: dict[str, str] | None = None, error: type[ConfigError] = ConfigError):
        self.name, self.overridden, self.error = name, overridden or {}, error

    def where(self, key: str) -> str:
        """The file, and the override that set ``key`` (or a key inside it), as messages name them."""
        for set_key, text in self.overridden.items():
            if set_key == key or set_key.startswith(key + "."):
                return f"{self.name} (override '{text}')"
        return self.name

    def fail(self, message: str) -> NoReturn:
        """Raise the source's error with ``message`` on one line, whatever a value contained."""
        raise self.error(" ".join(message.split()))

    def must_be(self, key: str, allowed: str, value: Any) -> NoReturn:
        """Raise: ``key`` must be ``allowed``, got ``value``."""
        self.fail(f"'{key}' in {self.where(key)} must be {allowed}, got {show_value(value)}.")


@functools.cache
def adapter(cls: type) -> TypeAdapter:
    """pydantic's validator and JSON Schema maker for a section class (built once per class)."""
    return TypeAdapter(cls)


def validate(cls: type[T], raw: Any, source: Source) -> T:
    """Build ``cls`` from a YAML mapping; the first mistake (unknown keys before the rest) is one sentence."""
    try:
        return adapter(cls).validate_python(raw, context={"file": True})
    except pydantic.ValidationError as exc:
        source.fail(_sentence(cls, raw, _first(exc.errors()), source))


def allowed_words(meta: list) -> str | None:
    """The allowed words declared among a key's metadata."""
    return next((m.text for m in meta if isinstance(m, Allowed)), None)


def check(tp: Any, value: Any, key: str, source: Source) -> Any:
    """``value`` validated as a key of type ``tp`` (for rules where a key's type depends on another key)."""
    try:
        return adapter(tp).validate_python(value)
    except pydantic.ValidationError:
        meta = []
        unwrap(tp, meta)
        source.must_be(key, allowed_words(meta), value)


_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")


def _first(errors: list[dict]) -> dict:
    """pydantic's order (keys as declared), except that an unknown key comes first among its siblings."""
    def order(a, b) -> int:
        (i, x), (j, y) = a, b
        depth = next((d for d, (p, q) in enumerate(zip(x["loc"], y["loc"])) if p != q),
                     min(len(x["loc"]), len(y["loc"])))
        x_unknown, y_unknown = (e["type"] in _UNKNOWN and len(e["loc"]) == depth + 1 for e in (x, y))
        return y_unknown - x_unknown if x_unknown != y_unknown else i - j
    return min(enumerate(errors), key=functools.cmp_to_key(order))[1]


def unwrap(tp: Any, meta: list) -> Any:
    """A declared type without Annotated (its metadata appended to ``meta``) and without Optional."""
    while True:
        if get_origin(tp) is Annotated:
            tp, *extra = get_args(tp)
            meta.extend(extra)
        elif get_origin(tp) is Union and type(None) in get_args(tp) and len(get_args(tp)) == 2:
            tp = next(a for a in get_args(tp) if a is not type(None))
        else:
            return tp


def _declares(tp: Any) -> bool:
    """Whether a list's or mapping's item is declared on its own (a section, or with its own allowed words)."""
    meta = []
    return dataclasses.is_dataclass(unwrap(tp, meta)) or any(isinstance(m, (Allowed, Says)) for m in meta)


def _walk(cls: type, raw: Any, loc: tuple) -> tuple[str, list, Any, Any]:
    """Follow an error's location through the declared types: its dotted key, the metadata declared there,
    the section holding it and the value the file gave."""
    key, tp, meta, owner, value = "", cls, [], None, raw
    for part in loc:
        tp = unwrap(tp, meta)
        args = get_args(tp)
        if get_origin(tp) is Union and any(t.tag == part for a in args for t in get_args(a)[1:] if isinstance(t, Tag)):
            tp = next(a for a in args if any(isinstance(t, Tag) and t.tag == part for t in get_args(a)[1:]))
            continue  # a variant's tag, not a key
        if dataclasses.is_dataclass(tp) and isinstance(part, str):
            owner, info = tp, tp.__pydantic_fields__.get(part)
            key += f".{part}"
            if info is None:
                break
            tp, meta = info.annotation, list(info.metadata)
        elif get_origin(tp) in (list, tuple, dict) and _declares(args[-1] if get_origin(tp) is dict else args[0]):
            tp, meta = args[-1] if get_origin(tp) is dict else args[0], []
            key += f"[{part}]" if isinstance(part, int) else f".{part}"
        else:
            break  # a plain item, or a union member's label: the key is where they were declared
        value = value.get(part) if isinstance(value, dict) else value[part] if isinstance(value, list) else None
    unwrap(tp, meta)
    return key.lstrip("."), meta, owner, value


def _sentence(cls: type, raw: Any, error: dict, source: Source) -> str:
    key, meta, owner, value = _walk(cls, raw, error["loc"])
    kind, ctx = error["type"], error.get("ctx") or {}
    says = next((m for m in meta if isinstance(m, Says) and (kind == "missing" or not m.missing_only)), None)
    if "render" in ctx or says:
        return (ctx.get("render") or says.render)(key, source.where)
    if kind in _UNKNOWN:
        prefix, name = key[:len(key) - len(str(error["loc"][-1]))], str(error["loc"][-1])
        known = file_keys(owner)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean '{prefix}{close[0]}'?" if close else "allowed keys here: " + ", ".join(known) + "."
        return f"Unknown key '{key}' in {source.where(key)}; {hint}"
    allowed = ctx.get("allowed") or allowed_words(meta) or "a mapping of keys"
    if kind == "missing":
        return f"Missing required key '{key}' in {source.where(key)}; set it to {allowed}."
    return f"'{key}' in {source.where(key)} must be {allowed}, got {show_value(value)}."


# ---- YAML files ----

class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which PyYAML would otherwise resolve silently to the last one."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            name = self.construct_object(key_node, deep=deep)
            try:
                if name in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"duplicate key {name!r}", key_node.start_mark)
                seen.add(name)
            except TypeError:  # unhashable key: let SafeLoader report it
                pass
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path, what: str = "Config file") -> Any:
    """Parse a YAML file (duplicate keys refused); a missing file or bad syntax is a one-sentence ConfigError."""
    source, p = Source(str(path)), Path(path)
    example = "configs/sd2_finetune_5k.yaml" if what == "Config file" else "sweeps/quickstart.yaml"
    if not p.is_file():
        what_is = "is a directory, not a file" if p.is_dir() else "does not exist"
        source.fail(f"{what} '{path}' {what_is}; pass the path of a YAML file such as {example}.")
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except UnicodeDecodeError:
        source.fail(f"{what} '{path}' is not UTF-8 text; save it as UTF-8 YAML.")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        source.fail(f"{what} '{path}' is not valid YAML{line}: {getattr(exc, 'problem', None) or exc}; "
                    f"fix the syntax there.")
    if raw is None:
        source.fail(f"{what} '{path}' is empty; write its keys in it, as in {example}.")
    return raw
