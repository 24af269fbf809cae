"""``mcpsync.schema``: JSON Schema from type hints, validation, conversion; and a tool that
takes a dataclass and an Enum receiving the converted Python objects."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Optional, TypedDict, Union

import pytest

from mcpsync import Server
from mcpsync.schema import (Description, convert, is_structured, schema_for, signature_schema,
                            to_jsonable, validate)

from memclient import MemClient


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Mixed(enum.Enum):
    A = "a"
    ONE = 1


class Movie(TypedDict):
    title: str
    year: int


class PartialMovie(TypedDict, total=False):
    title: str


@dataclass
class Address:
    street: str
    city: str = "Paris"


@dataclass
class Person:
    name: str
    address: Address
    tags: list[str] = field(default_factory=list)
    color: Color = Color.RED


@pytest.mark.parametrize("hint, schema", [
    (str, {"type": "string"}),
    (int, {"type": "integer"}),
    (float, {"type": "number"}),
    (bool, {"type": "boolean"}),
    (type(None), {"type": "null"}),
    (None, {"type": "null"}),
    (Any, {}),
    (Optional[int], {"type": ["integer", "null"]}),
    (int | None, {"type": ["integer", "null"]}),
    (Union[int, str], {"anyOf": [{"type": "integer"}, {"type": "string"}]}),
    (Union[int, str, None], {"anyOf": [{"type": "integer"}, {"type": "string"}, {"type": "null"}]}),
    (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
    (Literal["a", 1], {"enum": ["a", 1]}),
    (Optional[Literal["a"]], {"anyOf": [{"type": "string", "enum": ["a"]}, {"type": "null"}]}),
    (Color, {"type": "string", "enum": ["red", "green"]}),
    (Level, {"type": "integer", "enum": [1, 2]}),
    (Mixed, {"enum": ["a", 1]}),
    (list[int], {"type": "array", "items": {"type": "integer"}}),
    (list, {"type": "array"}),
    (set[str], {"type": "array", "items": {"type": "string"}, "uniqueItems": True}),
    (tuple[int, ...], {"type": "array", "items": {"type": "integer"}}),
    (tuple[int, str], {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
                       "minItems": 2, "maxItems": 2}),
    (dict[str, float], {"type": "object", "additionalProperties": {"type": "number"}}),
    (dict, {"type": "object"}),
    (Movie, {"type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
             "required": ["title", "year"]}),
    (PartialMovie, {"type": "object", "properties": {"title": {"type": "string"}}, "required": []}),
    (Address, {"type": "object", "properties": {"street": {"type": "string"},
                                                "city": {"type": "string", "default": "Paris"}},
               "required": ["street"]}),
    (Annotated[int, "How many"], {"type": "integer", "description": "How many"}),
    (Annotated[str, Description("Name")], {"type": "string", "description": "Name"}),
    (Annotated[int, {"minimum": 0}], {"type": "integer", "minimum": 0}),
    (list[Annotated[int, "n"]], {"type": "array", "items": {"type": "integer", "description": "n"}}),
])
def test_schema_for(hint: Any, schema: dict[str, Any]) -> None:
    assert schema_for(hint) == schema


def test_schema_for_nested_dataclass() -> None:
    schema = schema_for(Person)
    assert schema["required"] == ["name", "address"]
    assert schema["properties"]["address"]["required"] == ["street"]
    assert schema["properties"]["tags"] == {"type": "array", "items": {"type": "string"}}
    # an Enum default is not a JSON value: it is left out rather than sent wrongly
    assert "default" not in schema["properties"]["color"] or schema["properties"]["color"]["default"] == "red"


def test_schema_for_unsupported_hint() -> None:
    class Opaque:
        pass
    with pytest.raises(TypeError):
        schema_for(Opaque)


def test_signature_schema() -> None:
    def fn(a: int, b: str = "x", c: Color = Color.GREEN, d: Optional[list[int]] = None,
           *args: Any, **kwargs: Any) -> None:
        pass
    schema, hints = signature_schema(fn)
    assert schema == {"type": "object", "properties": {
        "a": {"type": "integer"},
        "b": {"type": "string", "default": "x"},
        "c": {"type": "string", "enum": ["red", "green"], "default": "green"},
        "d": {"type": ["array", "null"], "items": {"type": "integer"}, "default": None}},
        "required": ["a"]}
    assert set(hints) == {"a", "b", "c", "d"}
    schema, _ = signature_schema(fn, skip=frozenset({"a"}))
    assert "a" not in schema["properties"] and "required" not in schema


@pytest.mark.parametrize("schema, value", [
    ({"type": "string"}, "x"),
    ({"type": "integer"}, 3),
    ({"type": "integer"}, 3.0),
    ({"type": "number"}, 3),
    ({"type": ["integer", "null"]}, None),
    ({"enum": ["a", 1]}, 1),
    ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, "s"),
    ({"type": "array", "items": {"type": "integer"}}, [1, 2]),
    ({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}, [1, "a"]),
    ({"type": "object", "additionalProperties": {"type": "number"}}, {"a": 1.5}),
    (schema_for(Person), {"name": "n", "address": {"street": "s"}}),
    ({"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^a"}, "ab"),
    ({"type": "integer", "minimum": 0, "maximum": 10}, 10),
    ({"const": 5}, 5),
    ({}, object()),
])
def test_validate_accepts(schema: dict[str, Any], value: Any) -> None:
    assert validate(schema, value) == []


@pytest.mark.parametrize("schema, value, fragment", [
    ({"type": "string"}, 3, "expected string"),
    ({"type": "integer"}, True, "expected integer"),
    ({"type": "integer"}, 2.5, "expected integer"),
    ({"type": "number"}, "1", "expected number"),
    ({"type": "boolean"}, 0, "expected boolean"),
    ({"type": "string"}, None, "expected string"),
    ({"enum": ["a"]}, "b", "one of"),
    ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, [], "does not match"),
    ({"type": "array", "items": {"type": "integer"}}, [1, "x"], "$[1]"),
    ({"type": "object", "required": ["a"]}, {}, "missing required property 'a'"),
    ({"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
     {"b": 1}, "unexpected property 'b'"),
    (schema_for(Person), {"name": "n", "address": {}}, "$.address: missing required property 'street'"),
    ({"type": "string", "minLength": 2}, "a", "shorter"),
    ({"type": "string", "maxLength": 1}, "ab", "longer"),
    ({"type": "string", "pattern": "^a"}, "b", "pattern"),
    ({"type": "integer", "minimum": 0}, -1, "minimum"),
    ({"type": "integer", "maximum": 0}, 1, "maximum"),
    ({"type": "array", "minItems": 1}, [], "fewer"),
    ({"const": 5}, 6, "must be 5"),
    ({"type": "object", "properties": {"x": False}}, {"x": 1}, "$.x: no value is allowed"),
    ({"type": "array", "items": False}, [1], "$[0]: no value is allowed"),
    ({"type": "object", "additionalProperties": False}, {"y": 1}, "unexpected property 'y'"),
])
def test_validate_rejects(schema: dict[str, Any], value: Any, fragment: str) -> None:
    problems = validate(schema, value)
    assert problems and any(fragment in p for p in problems), problems


@pytest.mark.parametrize("hint, value, expected", [
    (Color, "green", Color.GREEN),
    (Level, 2, Level.HIGH),
    (float, 2, 2.0),
    (int, 2.0, 2),
    (Optional[Color], None, None),
    (Optional[Color], "red", Color.RED),
    (list[Color], ["red", "green"], [Color.RED, Color.GREEN]),
    (tuple[int, ...], [1, 2], (1, 2)),
    (tuple[int, str], [1, "a"], (1, "a")),
    (set[int], [1, 1, 2], {1, 2}),
    (dict[str, Color], {"a": "red"}, {"a": Color.RED}),
    (Annotated[Color, "c"], "red", Color.RED),
    (Address, {"street": "s"}, Address("s")),
    (Person, {"name": "n", "address": {"street": "s", "city": "c"}, "color": "green"},
     Person("n", Address("s", "c"), [], Color.GREEN)),
    (Any, {"x": 1}, {"x": 1}),
    (Movie, {"title": "t", "year": 1}, {"title": "t", "year": 1}),
])
def test_convert(hint: Any, value: Any, expected: Any) -> None:
    got = convert(hint, value)
    assert got == expected
    assert type(got) is type(expected)


def test_to_jsonable() -> None:
    assert to_jsonable(Person("n", Address("s"), ["t"], Color.GREEN)) == {
        "name": "n", "address": {"street": "s", "city": "Paris"}, "tags": ["t"], "color": "green"}
    assert to_jsonable((1, {2}, Level.LOW)) == [1, [2], 1]


@pytest.mark.parametrize("hint, structured", [
    (Movie, True), (Address, True), (dict[str, int], True), (Annotated[Movie, "m"], True),
    (str, False), (list[int], False), (int, False),
])
def test_is_structured(hint: Any, structured: bool) -> None:
    assert is_structured(hint) is structured


# ---- end to end through a tool ----------------------------------------------------------------

def make_server() -> Server:
    server = Server("schema")
    server.seen = []  # type: ignore[attr-defined]

    @server.tool()
    def register(person: Person, color: Color, level: Level = Level.LOW,
                 scores: Optional[list[float]] = None) -> Person:
        """Receives converted Python objects."""
        server.seen.append((person, color, level, scores))  # type: ignore[attr-defined]
        return person

    return server


def test_tool_receives_converted_objects() -> None:
    server = make_server()
    c = MemClient(server)
    c.initialize()
    (tool,) = c.call("tools/list")["tools"]
    assert tool["inputSchema"]["properties"]["color"] == {"type": "string", "enum": ["red", "green"]}
    assert tool["inputSchema"]["properties"]["level"] == {"type": "integer", "enum": [1, 2], "default": 1}
    assert tool["inputSchema"]["required"] == ["person", "color"]
    assert tool["outputSchema"] == schema_for(Person)

    result = c.call_tool("register", {"person": {"name": "Ada", "address": {"street": "1 Rue"}},
                                      "color": "green", "scores": [1, 2.5]})
    (person, color, level, scores), = server.seen  # type: ignore[attr-defined]
    assert person == Person("Ada", Address("1 Rue"))
    assert isinstance(person.address, Address)
    assert color is Color.GREEN
    assert level is Level.LOW
    assert scores == [1.0, 2.5] and all(type(s) is float for s in scores)
    assert result["structuredContent"] == {"name": "Ada", "address": {"street": "1 Rue", "city": "Paris"},
                                           "tags": [], "color": "red"}


def test_tool_rejects_a_bad_enum_value() -> None:
    server = make_server()
    c = MemClient(server)
    c.initialize()
    result = c.call_tool("register", {"person": {"name": "Ada", "address": {"street": "x"}}, "color": "blue"})
    assert result["isError"] is True
    assert "$.color" in result["content"][0]["text"]
    assert server.seen == []  # type: ignore[attr-defined]
