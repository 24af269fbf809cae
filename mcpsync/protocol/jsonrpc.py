"""JSON-RPC 2.0 framing for MCP: decode, classify, validate, encode.

Theory of operation
-------------------
Messages stay plain ``dict`` objects end to end (the cheapest thing Python can build and
serialize); this module only decides what a decoded value *is* and whether it is legal:

* ``decode(data)`` turns bytes or text into a Python value, raising ``ParseError`` for bad
  JSON or bad UTF-8, and for the two things Python's parser accepts that could never be
  encoded again: a number out of the float range (``1e999`` would be infinity) and a lone
  UTF-16 surrogate escape (``"\ud800"`` is no Unicode character). It does not judge the shape.
* ``classify(obj)`` names one message: ``REQUEST``, ``NOTIFICATION``, ``RESPONSE`` or
  ``ERROR``, raising ``InvalidRequest`` for anything else (wrong ``jsonrpc``, ``id: null`` on
  a request, non-object ``params`` ...). MCP is stricter than JSON-RPC: ids are strings or
  integers, never null, never booleans or floats.
* ``encode(msg)`` produces compact UTF-8 JSON.

Ids are echoed with their exact JSON type: the decoded ``id`` object is put back unchanged.
"""
from __future__ import annotations

import json
import json.encoder
from typing import Any, Callable, Sequence

from ..errors import InvalidRequest, McpError, ParseError

REQUEST = "request"
NOTIFICATION = "notification"
RESPONSE = "response"
ERROR = "error"

JSONRPC = "2.0"
MAX_DEPTH = 64  # nesting of arrays/objects accepted in one message

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# The C encoder that ``_encoder.encode`` builds on every call, built here directly: the same
# output and errors (circular references, NaN, unknown types) without JSONEncoder's Python
# set-up (a sixth of encoding a small reply). A fresh one per message: it keeps the
# circular-reference marks of the message it encodes. None without the C accelerator.
_c_make_encoder: Callable[..., Callable[[Any, int], Sequence[str]]] | None = getattr(
    json.encoder, "c_make_encoder", None)  # not in typeshed
_encode_string = json.encoder.encode_basestring  # what ensure_ascii=False encodes str with
JSON_WHITESPACE = " \t\n\r"  # RFC 8259's insignificant whitespace (json.decoder's too)


def decode(data: bytes | str) -> Any:
    """Parse one JSON text. Raises ``ParseError`` (-32700) on invalid UTF-8 or JSON."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError("Parse error: body is not valid UTF-8") from None
    else:
        text = data
    # JSONDecoder.decode without its Python wrapper: one value between optional whitespace.
    start = len(text) - len(text.lstrip(JSON_WHITESPACE))
    try:
        value, end = _scan(text, start)  # C; its own recursion guard ends a deep text early
    except StopIteration:  # no value at all
        raise ParseError("Parse error: invalid JSON") from None
    except _OutOfRange as exc:
        raise ParseError(f"Parse error: the number {exc} is out of range") from None
    except RecursionError:
        raise ParseError(f"Parse error: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise ParseError("Parse error: invalid JSON") from None
    if end != len(text) and text[end:].strip(JSON_WHITESPACE):
        raise ParseError("Parse error: invalid JSON")  # more than one value
    if text.count("[") + text.count("{") > MAX_DEPTH and _too_deep(value):
        raise ParseError(f"Parse error: nested deeper than {MAX_DEPTH} levels")
    if "\\u" in text and ("\\ud" in text or "\\uD" in text) and _lone_surrogate(value):
        raise ParseError("Parse error: a string holds a lone UTF-16 surrogate escape, "
                         "which is not a Unicode character")
    return value


def _lone_surrogate(value: Any) -> bool:
    """True if a string in ``value`` holds an unpaired surrogate (it cannot be UTF-8).
    Called only for texts that contain a surrogate escape at all (pairs decode to one
    character and pass)."""
    try:
        _encoder.encode(value).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _too_deep(value: Any) -> bool:
    """True if arrays/objects nest deeper than MAX_DEPTH in a decoded value. Only called when
    the text has more brackets than that at all; it visits containers, not characters, and
    stops at the first one too deep (a fraction of the parse's own cost)."""
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > MAX_DEPTH:
            return True
        for child in (node.values() if type(node) is dict else node):
            kind = type(child)
            if kind is list or kind is dict:
                push((child, depth + 1))
    return False


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN, Infinity and -Infinity, which are not JSON (RFC 8259), and which
    # we could not encode again (allow_nan=False).
    raise ValueError(f"{name} is not JSON")


class _OutOfRange(ValueError):
    """A number literal beyond the float range; its text is the exception's message."""


def _finite_float(literal: str) -> float:
    value = float(literal)
    if value in (_INF, -_INF):  # a literal is never NaN: the grammar has no way to say it
        raise _OutOfRange(literal[:40])
    return value


_INF = float("inf")
# Stateless: shared by all threads.
_decoder = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
# (text, index) -> (value, end); StopIteration when no value starts there. Not in typeshed.
_scan: Callable[[str, int], tuple[Any, int]] = getattr(_decoder, "scan_once")


def encode(msg: Any) -> bytes:
    """Compact UTF-8 JSON for one message or a batch."""
    if _c_make_encoder is None or type(msg) is str:
        return _encoder.encode(msg).encode("utf-8")
    chunks = _c_make_encoder({}, _encoder.default, _encode_string, None, ":", ",", False, False,
                             False)(msg, 0)
    return "".join(chunks).encode("utf-8")


def is_valid_id(value: Any) -> bool:
    # bool is a subclass of int in Python; JSON true/false is not a legal id.
    return (type(value) is str) or (type(value) is int)


def classify(obj: Any) -> str:
    """Name the kind of one decoded message or raise ``InvalidRequest``."""
    if type(obj) is not dict:
        raise InvalidRequest("Invalid Request: a message must be a JSON object")
    if obj.get("jsonrpc") != JSONRPC:
        raise InvalidRequest('Invalid Request: "jsonrpc" must be "2.0"')
    method = obj.get("method")
    if method is not None:
        if type(method) is not str:
            raise InvalidRequest('Invalid Request: "method" must be a string')
        params = obj.get("params")
        if params is not None and type(params) is not dict:
            raise InvalidRequest('Invalid Request: "params" must be an object')
        if "id" not in obj:
            return NOTIFICATION
        if not is_valid_id(obj["id"]):
            raise InvalidRequest('Invalid Request: "id" must be a string or an integer')
        return REQUEST
    if "result" in obj:
        if "error" in obj or not is_valid_id(obj.get("id")):
            raise InvalidRequest("Invalid Request: malformed response")
        return RESPONSE
    if "error" in obj:
        err = obj["error"]
        if type(err) is not dict or type(err.get("code")) is not int:
            raise InvalidRequest("Invalid Request: malformed error response")
        return ERROR
    raise InvalidRequest("Invalid Request: neither a request, a notification nor a response")


def readable_id(obj: Any) -> Any:
    """The id of a possibly malformed message when it is a legal id, else None."""
    if type(obj) is dict:
        rid = obj.get("id")
        if is_valid_id(rid):
            return rid
    return None


def request(rid: str | int, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": JSONRPC, "id": rid, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": JSONRPC, "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def response(rid: str | int, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "id": rid, "result": result}


def error_response(rid: str | int | None, error: McpError) -> dict[str, Any]:
    """An error response. ``rid`` None (the id could not be read) is sent as ``"id": null``,
    which every revision's clients accept."""
    return {"jsonrpc": JSONRPC, "id": rid, "error": error.to_error()}
