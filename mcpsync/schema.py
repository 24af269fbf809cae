"""JSON Schema from Python type hints, validation, and conversion of validated arguments.

Theory of operation
-------------------
``schema_for(hint)`` maps a type hint to a JSON Schema (2020-12 dialect) fragment:

=========================  ==========================================================
hint                       schema
=========================  ==========================================================
str / int / float / bool   ``{"type": "string" | "integer" | "number" | "boolean"}``
None                       ``{"type": "null"}``
Optional[X], X | None      X's schema with ``"null"`` added to its type (or ``anyOf``)
Union[X, Y]                ``{"anyOf": [X, Y]}``
Literal["a", 1]            ``{"enum": ["a", 1]}`` (plus ``type`` when uniform)
Enum subclass              ``{"enum": [member values]}``
list[X], tuple[X, ...]     ``{"type": "array", "items": X}``
dict[str, X]               ``{"type": "object", "additionalProperties": X}``
TypedDict, dataclass       ``{"type": "object", "properties": …, "required": …}``
datetime / date / time     ``{"type": "string", "format": "date-time" | "date" | "time"}``
UUID                       ``{"type": "string", "format": "uuid"}``
Path (any ``PurePath``)    ``{"type": "string"}``
Decimal                    ``{"type": ["string", "number"]}`` (a string keeps every digit)
bytes                      ``{"type": "string", "contentEncoding": "base64"}``
pydantic ``BaseModel``     the model's own JSON Schema (when pydantic is installed)
Annotated[X, "text"]       X's schema with ``"description": "text"``
=========================  ==========================================================

Values of the string-borne types are checked by ``validate`` (the formats we generate are
asserted, not only annotated), converted by ``convert`` and written back by ``to_jsonable``
in their ISO / canonical text form. A pydantic model validates itself in ``convert``
(``ArgumentError`` carries its complaint). A hint with no JSON form raises ``TypeError``.

``validate(schema, value)`` checks the subset of JSON Schema that we generate (and a bit
more: numeric and length bounds, ``const``, ``pattern``, ``minItems``) and returns a list of
human-readable problems, empty when valid. ``convert(hint, value)`` then turns validated
JSON into the annotated Python types (Enum members, dataclass instances, tuples). The
validator is deliberately small and iterative over the schema we wrote ourselves; it never
evaluates ``$ref`` across documents.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import decimal
import enum
import inspect
import pathlib
import re
import sys
import types
import typing
import uuid
from typing import Any, Callable, Literal, Union, get_args, get_origin

try:  # Python 3.11+: typing.is_typeddict
    from typing import is_typeddict
except ImportError:  # pragma: no cover - 3.10
    from typing_extensions import is_typeddict

from .errors import DefinitionError

Schema = dict[str, Any]

_PRIMITIVES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean",
                               type(None): "null"}
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "null": (type(None),), "array": (list,), "object": (dict,),
}


class Description(str):
    """Marker for ``Annotated[X, Description("...")]``; a plain string works too."""


class ArgumentError(ValueError):
    """A value passed validation but cannot become its parameter's type (a pydantic model
    that refuses it, a decimal out of range): an invalid argument, said in one line."""


def _iso(cls: Any) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if text.endswith(("Z", "z")):  # RFC 3339's UTC designator (3.10's parser lacks it)
            text = text[:-1] + "+00:00"
        return cls.fromisoformat(text)
    return parse


def _decimal(value: Any) -> decimal.Decimal:
    try:
        number = decimal.Decimal(value if isinstance(value, str) else repr(value))
    except decimal.InvalidOperation:
        raise ArgumentError(f"{value!r} is not a decimal number") from None
    if not number.is_finite():
        raise ArgumentError(f"{value!r} is not a finite decimal number")
    return number


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ArgumentError("not valid base64") from None


# Types that travel as JSON strings: hint -> (schema, parse text -> value).
_TEXT_TYPES: dict[Any, tuple[Schema, Callable[[Any], Any]]] = {
    datetime.datetime: ({"type": "string", "format": "date-time"}, _iso(datetime.datetime)),
    datetime.date: ({"type": "string", "format": "date"}, _iso(datetime.date)),
    datetime.time: ({"type": "string", "format": "time"}, _iso(datetime.time)),
    uuid.UUID: ({"type": "string", "format": "uuid"}, uuid.UUID),
    decimal.Decimal: ({"type": ["string", "number"]}, _decimal),
    bytes: ({"type": "string", "contentEncoding": "base64"}, _base64),
}
# The string formats validate() asserts, and how.
_FORMATS: dict[str, Callable[[str], Any]] = {
    "date-time": _iso(datetime.datetime), "date": _iso(datetime.date),
    "time": _iso(datetime.time), "uuid": uuid.UUID}


def _pydantic_model(hint: Any) -> bool:
    """Whether ``hint`` is a pydantic model class (pydantic is optional: only if imported)."""
    pydantic = sys.modules.get("pydantic")
    return (pydantic is not None and isinstance(hint, type)
            and issubclass(hint, pydantic.BaseModel))


def _is_union(origin: Any) -> bool:
    return origin is Union or origin is types.UnionType


def schema_for(hint: Any) -> Schema:
    """The JSON Schema fragment for one type hint (see the module table)."""
    if hint is inspect.Parameter.empty or hint is Any or hint is object:
        return {}
    if hint is None:  # what `-> None` means; get_type_hints turns it into NoneType, users may not
        hint = type(None)
    origin = get_origin(hint)
    if origin is typing.Annotated:
        base, *extras = get_args(hint)
        schema = dict(schema_for(base))
        for extra in extras:
            if isinstance(extra, str):
                schema["description"] = str(extra)
            elif isinstance(extra, dict):
                schema.update(extra)
        return schema
    if hint in _PRIMITIVES:
        return {"type": _PRIMITIVES[hint]}
    if hint in _TEXT_TYPES:
        return dict(_TEXT_TYPES[hint][0])
    if isinstance(hint, type) and issubclass(hint, pathlib.PurePath):
        return {"type": "string"}
    if _pydantic_model(hint):
        return dict(hint.model_json_schema())
    if _is_union(origin):
        args = get_args(hint)
        non_null = [a for a in args if a is not type(None)]
        parts = [schema_for(a) for a in non_null]
        nullable = len(non_null) != len(args)
        if len(parts) == 1 and nullable:
            only = dict(parts[0])
            t = only.get("type")
            if isinstance(t, str) and "enum" not in only:
                only["type"] = [t, "null"]
                return only
            return {"anyOf": [only, {"type": "null"}]}
        if nullable:
            parts.append({"type": "null"})
        return {"anyOf": parts}
    if origin is Literal:
        values = list(get_args(hint))
        schema = {"enum": values}
        kinds = {_json_type_name(v) for v in values}
        if len(kinds) == 1:
            schema["type"] = kinds.pop()
        return schema
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [m.value for m in hint]
        schema = {"enum": values}
        kinds = {_json_type_name(v) for v in values}
        if len(kinds) == 1:
            schema["type"] = kinds.pop()
        return schema
    if origin in (list, set, frozenset) or hint in (list, set, frozenset):
        args = get_args(hint)
        schema = {"type": "array"}
        if args:
            schema["items"] = schema_for(args[0])
        if origin in (set, frozenset):
            schema["uniqueItems"] = True
        return schema
    if origin is tuple or hint is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": schema_for(args[0])}
        if args:
            return {"type": "array", "prefixItems": [schema_for(a) for a in args],
                    "minItems": len(args), "maxItems": len(args)}
        return {"type": "array"}
    if origin is dict or hint is dict:
        args = get_args(hint)
        schema = {"type": "object"}
        if len(args) == 2:
            schema["additionalProperties"] = schema_for(args[1])
        return schema
    if is_typeddict(hint):
        hints = typing.get_type_hints(hint, include_extras=True)
        required = sorted(getattr(hint, "__required_keys__", hints.keys()))
        return {"type": "object", "properties": {k: schema_for(v) for k, v in hints.items()},
                "required": required}
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        hints = typing.get_type_hints(hint, include_extras=True)
        props: dict[str, Schema] = {}
        required = []
        for f in dataclasses.fields(hint):
            props[f.name] = schema_for(hints.get(f.name, Any))
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
            elif f.default is not dataclasses.MISSING and _jsonable(f.default):
                props[f.name]["default"] = f.default
        schema = {"type": "object", "properties": props}
        if required:
            schema["required"] = required
        return schema
    raise TypeError(f"cannot derive a JSON Schema from the type hint {hint!r}")


def _json_type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "object"


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None)))


def signature_schema(fn: Callable[..., Any], *, skip: frozenset[str] = frozenset()) -> tuple[Schema, dict[str, Any]]:
    """The input schema of a function's parameters, and a name -> hint map for ``convert``.
    Parameters named in ``skip`` (the context parameter) are left out. Arguments the
    function has no parameter for are refused (``additionalProperties: false``) unless it
    takes ``**kwargs``. Raises ``DefinitionError`` naming the function and the parameter
    whose hint has no JSON form."""
    hints = typing.get_type_hints(fn, include_extras=True)
    props: dict[str, Schema] = {}
    required: list[str] = []
    arg_hints: dict[str, Any] = {}
    params = inspect.signature(fn).parameters
    for name, param in params.items():
        if name in skip or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        hint = hints.get(name, Any)
        arg_hints[name] = hint
        try:
            prop = dict(schema_for(hint))
        except TypeError:
            raise DefinitionError(
                f"{fn.__qualname__}(): parameter {name!r} has the type {_hint_name(hint)}, which has "
                "no JSON form; use str, int, float, bool, list, dict, a TypedDict, a dataclass, "
                "an Enum, datetime/date/time, UUID, Path, Decimal, bytes or a pydantic model") from None
        if param.default is inspect.Parameter.empty:
            required.append(name)
        elif _jsonable(param.default) or isinstance(param.default, (list, dict)):
            prop["default"] = param.default
        elif isinstance(param.default, enum.Enum):
            prop["default"] = param.default.value
        props[name] = prop
    schema: Schema = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        schema["additionalProperties"] = False
    defs = _hoist_defs(props)
    if defs:  # a pydantic model's $refs point at the root: its $defs must live there
        schema["$defs"] = defs
    return schema, arg_hints


def _hint_name(hint: Any) -> str:
    return hint.__qualname__ if isinstance(hint, type) else repr(hint)


def _hoist_defs(node: Any) -> dict[str, Any]:
    """Remove every ``$defs`` below ``node`` and return them merged (names are the models')."""
    found: dict[str, Any] = {}
    if isinstance(node, dict):
        found.update(node.pop("$defs", None) or {})
        for value in node.values():
            found.update(_hoist_defs(value))
    elif isinstance(node, list):
        for value in node:
            found.update(_hoist_defs(value))
    return found


# ---- validation ---------------------------------------------------------------------------

def _type_ok(value: Any, t: str) -> bool:
    if t == "integer":
        return (type(value) is int) or (type(value) is float and value.is_integer())
    if t == "number":
        return type(value) in (int, float)
    if t == "boolean":
        return type(value) is bool
    return isinstance(value, _JSON_TYPES.get(t, (object,))) and not (
        t in ("string", "array", "object", "null") and type(value) is bool)


def validate(schema: Schema, value: Any, path: str = "") -> list[str]:
    """Problems with ``value`` against ``schema`` (empty list when it is valid)."""
    problems: list[str] = []
    _validate(schema, value, path or "$", problems)
    return problems


def _validate(schema: Schema, value: Any, path: str, out: list[str]) -> None:
    if schema is False:  # before the emptiness test below, which False would pass
        out.append(f"{path}: no value is allowed here")
        return
    if not schema or schema is True:
        return
    t = schema.get("type")
    if t is not None:
        allowed = t if isinstance(t, list) else [t]
        if not any(_type_ok(value, x) for x in allowed):
            out.append(f"{path}: expected {' or '.join(allowed)}, got {_json_type_name(value) if not isinstance(value, (list, dict)) else type(value).__name__.replace('list', 'array').replace('dict', 'object')}")
            return
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: must be one of {schema['enum']!r}")
        return
    if "const" in schema and value != schema["const"]:
        out.append(f"{path}: must be {schema['const']!r}")
    if "anyOf" in schema or "oneOf" in schema:
        options = schema.get("anyOf") or schema.get("oneOf") or []
        if not any(not validate(opt, value, path) for opt in options):
            out.append(f"{path}: does not match any allowed form")
            return
    if isinstance(value, str) and not isinstance(value, bool):
        fmt = schema.get("format")
        check = _FORMATS.get(fmt) if isinstance(fmt, str) else None
        if check is not None:
            try:
                check(value)
            except ValueError:
                out.append(f"{path}: not a valid {fmt}")
        if schema.get("contentEncoding") == "base64":
            try:
                _base64(value)
            except ArgumentError:
                out.append(f"{path}: not valid base64")
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(f"{path}: shorter than {schema['minLength']} characters")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{path}: longer than {schema['maxLength']} characters")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(f"{path}: does not match the pattern {schema['pattern']!r}")
    if type(value) in (int, float):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: less than the minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path}: greater than the maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(f"{path}: not greater than {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            out.append(f"{path}: not less than {schema['exclusiveMaximum']}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{path}: more than {schema['maxItems']} items")
        prefix = schema.get("prefixItems") or []
        for i, item in enumerate(value):
            if i < len(prefix):
                _validate(prefix[i], item, f"{path}[{i}]", out)
            elif "items" in schema:
                _validate(schema["items"], item, f"{path}[{i}]", out)
    elif isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or ():
            if key not in value:
                out.append(f"{path}: missing required property {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                _validate(props[key], item, f"{path}.{key}", out)
            elif extra is False:
                out.append(f"{path}: unexpected property {key!r}")
            elif isinstance(extra, dict):
                _validate(extra, item, f"{path}.{key}", out)


_SIMPLE_KEYS = frozenset({"type", "description", "title", "default"})
_PY_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                          "boolean": (bool,)}


def compile_validator(schema: Schema) -> Callable[[Any], list[str]]:
    """A validator for ``schema`` specialised for the common tool shape (an object of
    primitive-typed properties): one pass of exact type checks, falling back to ``validate``
    (for the precise messages) as soon as anything is off. Other schemas get ``validate``."""
    def slow(value: Any) -> list[str]:
        return validate(schema, value)

    props = schema.get("properties") or {}
    if schema.get("type") != "object" or set(schema) - {"type", "properties", "required",
                                                          "description", "title",
                                                          "additionalProperties"}:
        return slow
    closed = schema.get("additionalProperties", True) is False
    if not (closed or schema.get("additionalProperties", True) is True):
        return slow
    types: dict[str, tuple[type, ...]] = {}
    for name, prop in props.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        if not isinstance(kind, str) or kind not in _PY_TYPES or set(prop) - _SIMPLE_KEYS:
            return slow
        types[name] = _PY_TYPES[kind]
    required = tuple(schema.get("required") or ())

    def fast(value: Any) -> list[str]:
        if type(value) is not dict:
            return slow(value)
        for key in required:
            if key not in value:
                return slow(value)
        for key, item in value.items():
            allowed = types.get(key)
            if allowed is None:
                if closed:
                    return slow(value)  # an argument the function has no parameter for
            elif type(item) not in allowed:
                return slow(value)  # (bool is not int here: type(), not isinstance())
        return []
    return fast


def compile_converter(hint: Any) -> Callable[[Any], Any] | None:
    """``convert`` for one hint, or None where validated JSON needs no conversion."""
    base = get_args(hint)[0] if get_origin(hint) is typing.Annotated else hint
    if base in (str, bool, Any, inspect.Parameter.empty, type(None)):
        return None
    return lambda value: convert(hint, value)


# ---- conversion ---------------------------------------------------------------------------

def convert(hint: Any, value: Any) -> Any:
    """Turn already-validated JSON ``value`` into the Python type named by ``hint``."""
    if value is None or hint is Any or hint is inspect.Parameter.empty:
        return value
    origin = get_origin(hint)
    if origin is typing.Annotated:
        return convert(get_args(hint)[0], value)
    if hint is float and type(value) is int:
        return float(value)
    if hint is int and type(value) is float:
        return int(value)
    if _is_union(origin):
        for arg in get_args(hint):
            if arg is type(None):
                continue
            if not validate(schema_for(arg), value):
                return convert(arg, value)
        return value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint in _TEXT_TYPES:
        return _TEXT_TYPES[hint][1](value)
    if isinstance(hint, type) and issubclass(hint, pathlib.PurePath):
        return hint(value)
    if _pydantic_model(hint):
        try:
            return hint.model_validate(value)
        except ValueError as exc:  # pydantic's ValidationError: its first complaint, one line
            errors: list[dict[str, Any]] = getattr(exc, "errors", lambda: [])()
            first = errors[0] if errors else {}
            where = ".".join(str(p) for p in first.get("loc", ())) or hint.__name__
            raise ArgumentError(f"{where}: {first.get('msg', exc)}") from None
    if origin in (list, set, frozenset) and isinstance(value, list):
        args = get_args(hint)
        items = [convert(args[0], v) for v in value] if args else list(value)
        return origin(items) if origin is not list else items
    if origin is tuple and isinstance(value, list):
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(convert(args[0], v) for v in value)
        return tuple(convert(a, v) for a, v in zip(args, value))
    if origin is dict and isinstance(value, dict):
        args = get_args(hint)
        return {k: convert(args[1], v) for k, v in value.items()} if len(args) == 2 else value
    if dataclasses.is_dataclass(hint) and isinstance(hint, type) and isinstance(value, dict):
        hints = typing.get_type_hints(hint)
        names = {f.name for f in dataclasses.fields(hint)}
        return hint(**{k: convert(hints.get(k, Any), v) for k, v in value.items() if k in names})
    return value


def to_jsonable(value: Any) -> Any:
    """Python values from a tool's return (dataclasses, Enums, tuples, sets) as JSON data."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (datetime.date, datetime.time)):  # datetime is a date too
        return value.isoformat()
    if isinstance(value, (uuid.UUID, decimal.Decimal, pathlib.PurePath)):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    if _pydantic_model(type(value)):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    return value


def is_structured(hint: Any) -> bool:
    """Whether a return annotation describes structured output (an object)."""
    if get_origin(hint) is typing.Annotated:
        hint = get_args(hint)[0]
    return bool(is_typeddict(hint) or (dataclasses.is_dataclass(hint) and isinstance(hint, type))
                or get_origin(hint) is dict or _pydantic_model(hint))
