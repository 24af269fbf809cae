"""Content blocks a tool or prompt can return, and the conversion of return values to them.

A tool may return a ``str`` (one text block), ``bytes`` is refused (say what it is with
``Image``/``Audio``/``Blob``), one of the classes here, a raw content ``dict`` with a
``"type"`` key, a list of those, or a ``ToolResult`` for full control (``isError``,
``structuredContent``, ``_meta``).
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from .schema import to_jsonable

Content = dict[str, Any]


def _b64(data: bytes | str) -> str:
    return data if isinstance(data, str) else base64.b64encode(data).decode("ascii")


def _with_optional(d: dict[str, Any], annotations: dict[str, Any] | None,
                   meta: dict[str, Any] | None) -> dict[str, Any]:
    if annotations:
        d["annotations"] = annotations
    if meta:
        d["_meta"] = meta
    return d


@dataclass
class Text:
    text: str
    annotations: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    def to_content(self) -> Content:
        return _with_optional({"type": "text", "text": self.text}, self.annotations, self.meta)


@dataclass
class Image:
    """Image bytes (or base64 text) with their MIME type, e.g. ``Image(png, "image/png")``."""

    data: bytes | str
    mime_type: str = "image/png"
    annotations: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    def to_content(self) -> Content:
        return _with_optional({"type": "image", "data": _b64(self.data), "mimeType": self.mime_type},
                              self.annotations, self.meta)


@dataclass
class Audio:
    """Audio bytes (or base64 text) with their MIME type, e.g. ``Audio(wav, "audio/wav")``."""

    data: bytes | str
    mime_type: str = "audio/wav"
    annotations: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    def to_content(self) -> Content:
        return _with_optional({"type": "audio", "data": _b64(self.data), "mimeType": self.mime_type},
                              self.annotations, self.meta)


@dataclass
class Resource:
    """An embedded resource: its URI and either ``text`` or ``blob`` bytes."""

    uri: str
    text: str | None = None
    blob: bytes | str | None = None
    mime_type: str | None = None
    annotations: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    def contents(self) -> dict[str, Any]:
        c: dict[str, Any] = {"uri": self.uri}
        if self.mime_type:
            c["mimeType"] = self.mime_type
        if self.blob is not None:
            c["blob"] = _b64(self.blob)
        else:
            c["text"] = self.text or ""
        return c

    def to_content(self) -> Content:
        return _with_optional({"type": "resource", "resource": self.contents()},
                              self.annotations, self.meta)


@dataclass
class ResourceLink:
    """A link to a resource the client may read (2025-06-18 and later)."""

    uri: str
    name: str
    title: str | None = None
    description: str | None = None
    mime_type: str | None = None
    size: int | None = None
    annotations: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None

    def to_content(self) -> Content:
        d: dict[str, Any] = {"type": "resource_link", "uri": self.uri, "name": self.name}
        for key, value in (("title", self.title), ("description", self.description),
                           ("mimeType", self.mime_type), ("size", self.size)):
            if value is not None:
                d[key] = value
        return _with_optional(d, self.annotations, self.meta)


@dataclass
class ToolResult:
    """Full control over a tools/call result."""

    content: list[Any] = field(default_factory=list)
    structured: dict[str, Any] | None = None
    is_error: bool = False
    meta: dict[str, Any] | None = None


def to_content(item: Any) -> Content:
    """One content block from a tool or prompt return value."""
    if isinstance(item, str):
        return {"type": "text", "text": item}
    if isinstance(item, dict):
        if "type" not in item:
            raise TypeError("a content dict needs a 'type' key")
        return item
    convert = getattr(item, "to_content", None)
    if convert is not None:
        return convert()
    if isinstance(item, (bytes, bytearray)):
        raise TypeError("return Image(...), Audio(...) or Resource(blob=...) to say what the bytes are")
    return {"type": "text", "text": json.dumps(to_jsonable(item), ensure_ascii=False)}


def to_content_list(value: Any) -> list[Content]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [to_content(v) for v in value]
    return [to_content(value)]
