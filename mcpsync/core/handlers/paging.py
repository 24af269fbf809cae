"""``*/list`` pages: rendered once per registry generation and revision (the store's
cache), cut into pages of ``page_size`` with an opaque cursor."""
from __future__ import annotations

import base64
import binascii
from typing import Any, Callable

from ...errors import InvalidParams
from ..registry import Registry, RegistryStore


def page(store: RegistryStore, page_size: int, kind: str, version: str | None,
         params: dict[str, Any], reg: Registry,
         render: Callable[[], list[dict[str, Any]]]) -> dict[str, Any]:
    """One page of ``kind`` from ``reg`` (the generation ``render`` reads: cached under its own
    number, never a newer one)."""
    key = (kind, version, reg.generation)
    items = store.list_cache.get(key)
    if items is None:
        items = render()
        store.list_cache[key] = items  # a racing writer may drop it: harmless, rebuilt next time
    offset = _decode_cursor(params.get("cursor"))
    result: dict[str, Any] = {kind: items[offset:offset + page_size]}
    if offset + page_size < len(items):
        result["nextCursor"] = _encode_cursor(offset + page_size, reg.generation)
    return result


def _encode_cursor(offset: int, generation: int) -> str:
    return base64.urlsafe_b64encode(f"{generation}:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: Any) -> int:
    if cursor is None:
        return 0
    try:
        raw = base64.urlsafe_b64decode(str(cursor) + "=" * (-len(str(cursor)) % 4)).decode()
        _gen, offset = raw.split(":")
        value = int(offset)
        if value < 0:
            raise ValueError
        return value
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidParams("Invalid params: invalid pagination cursor") from None
