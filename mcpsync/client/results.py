"""What ``mcpsync.Client`` returns: small frozen objects read from the wire's JSON, each
with the fields a caller uses (``snake_case``) and the whole JSON object as ``raw`` for
anything else. Reading is lenient: a field of the wrong type is left out (None, empty)
rather than failing the call, since the server's answer is already in ``raw``."""
from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any


def _str(d: dict[str, Any], key: str) -> str | None:
    value = d.get(key)
    return value if isinstance(value, str) else None


def _dict(d: dict[str, Any], key: str) -> dict[str, Any]:
    value = d.get(key)
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _decode(text: str | None, b64: str | None) -> bytes:
    if b64 is not None:
        return base64.b64decode(b64)
    return (text or "").encode("utf-8")


@dataclass(frozen=True)
class ResourceContents:
    """One item of a resource read (or of an embedded resource): ``text`` or ``blob``
    (base64)."""

    uri: str
    mime_type: str | None = None
    text: str | None = None
    blob: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "ResourceContents":
        return cls(_str(d, "uri") or "", _str(d, "mimeType"), _str(d, "text"), _str(d, "blob"), d)

    def as_bytes(self) -> bytes:
        """The blob decoded, or the text in UTF-8."""
        return _decode(self.text, self.blob)


@dataclass(frozen=True)
class Content:
    """One content block: ``type`` is ``text``, ``image``, ``audio``, ``resource_link`` or
    ``resource``; ``data`` is the base64 of an image or audio block."""

    type: str
    text: str | None = None
    data: str | None = None
    mime_type: str | None = None
    uri: str | None = None
    name: str | None = None
    resource: ResourceContents | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "Content":
        embedded = d.get("resource")
        return cls(_str(d, "type") or "", _str(d, "text"), _str(d, "data"), _str(d, "mimeType"),
                   _str(d, "uri"), _str(d, "name"),
                   ResourceContents.from_wire(embedded) if isinstance(embedded, dict) else None, d)

    def as_bytes(self) -> bytes:
        """An image's or audio's bytes, a text in UTF-8 (an embedded resource's contents)."""
        if self.resource is not None:
            return self.resource.as_bytes()
        return _decode(self.text, self.data)


def _contents(value: Any) -> tuple[Content, ...]:
    return tuple(Content.from_wire(c) for c in _dicts(value))


def _text_of(blocks: tuple[Content, ...]) -> str:
    return "".join(b.text for b in blocks if b.type == "text" and b.text is not None)


@dataclass(frozen=True)
class CallToolResult:
    """A tool's answer. ``is_error``: the tool failed (its message is in ``content``);
    ``structured_content``: its structured output, when it has one."""

    content: tuple[Content, ...]
    structured_content: Any = None
    is_error: bool = False
    meta: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "CallToolResult":
        return cls(_contents(d.get("content")), d.get("structuredContent"), d.get("isError") is True,
                   _dict(d, "_meta"), d)

    @property
    def text(self) -> str:
        """The text blocks, joined."""
        return _text_of(self.content)


@dataclass(frozen=True)
class ReadResourceResult:
    contents: tuple[ResourceContents, ...]
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "ReadResourceResult":
        return cls(tuple(ResourceContents.from_wire(c) for c in _dicts(d.get("contents"))), d)

    @property
    def text(self) -> str:
        """The text items, joined."""
        return "".join(c.text for c in self.contents if c.text is not None)


@dataclass(frozen=True)
class PromptMessage:
    role: str
    content: Content


@dataclass(frozen=True)
class GetPromptResult:
    messages: tuple[PromptMessage, ...]
    description: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "GetPromptResult":
        messages = tuple(PromptMessage(_str(m, "role") or "", Content.from_wire(_dict(m, "content")))
                         for m in _dicts(d.get("messages")))
        return cls(messages, _str(d, "description"), d)


@dataclass(frozen=True)
class Completion:
    values: tuple[str, ...]
    total: int | None = None
    has_more: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "Completion":
        c = _dict(d, "completion")
        total = c.get("total")
        values = c.get("values")
        return cls(tuple(v for v in values if isinstance(v, str)) if isinstance(values, list) else (),
                   total if isinstance(total, int) and not isinstance(total, bool) else None,
                   c.get("hasMore") is True, d)


@dataclass(frozen=True)
class Tool:
    name: str
    description: str | None = None
    title: str | None = None
    input_schema: dict[str, Any] = field(default_factory=dict)
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "Tool":
        out = d.get("outputSchema")
        return cls(_str(d, "name") or "", _str(d, "description"), _str(d, "title"), _dict(d, "inputSchema"),
                   out if isinstance(out, dict) else None, _dict(d, "annotations"), d)


@dataclass(frozen=True)
class Resource:
    uri: str
    name: str | None = None
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "Resource":
        return cls(_str(d, "uri") or "", _str(d, "name"), _str(d, "title"), _str(d, "description"),
                   _str(d, "mimeType"), d)


@dataclass(frozen=True)
class ResourceTemplate:
    uri_template: str
    name: str | None = None
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "ResourceTemplate":
        return cls(_str(d, "uriTemplate") or "", _str(d, "name"), _str(d, "title"), _str(d, "description"),
                   _str(d, "mimeType"), d)


@dataclass(frozen=True)
class PromptArgument:
    name: str
    description: str | None = None
    required: bool = False


@dataclass(frozen=True)
class Prompt:
    name: str
    title: str | None = None
    description: str | None = None
    arguments: tuple[PromptArgument, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "Prompt":
        args = tuple(PromptArgument(_str(a, "name") or "", _str(a, "description"), a.get("required") is True)
                     for a in _dicts(d.get("arguments")))
        return cls(_str(d, "name") or "", _str(d, "title"), _str(d, "description"), args, d)


@dataclass(frozen=True)
class LogMessage:
    """A ``notifications/message`` from the server (``Client(on_log=...)``)."""

    level: str
    data: Any
    logger: str | None = None


@dataclass(frozen=True)
class ServerInfo:
    """Who answered and what it offers: ``protocol_version`` is the negotiated revision."""

    name: str
    version: str | None
    protocol_version: str
    capabilities: dict[str, Any]
    title: str | None = None
    instructions: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
