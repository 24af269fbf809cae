"""The modern revision (2026-07-28): per-request checks and result decoration, sans-IO.

Theory of operation
-------------------
A modern request carries everything a session used to hold in ``params._meta``: the
protocol version, the client's capabilities (and optionally its identity and a log
level). ``request_envelope`` validates that envelope in the order the revision gives:
the envelope keys (-32602), the version (-32022 naming what we support). Over HTTP the
standard request headers are compared with the body (-32020) between the two: there
``check_headers`` does all three and hands the request's connection the ``Envelope``, so
the envelope is read once.

Results get ``resultType`` and the server's identity in ``_meta``; list and read results
also get the cache hints ``ttlMs`` and ``cacheScope`` (``decorate_result``). The identity is
the same on every result: a ``SharedMeta``, encoded once and spliced into each response
(``encode_response``).

Multi round-trip requests: a handler that needs input from the client (sampling,
elicitation, roots) raises ``InputRequired``; the answer to the client is an
``input_required`` result whose ``requestState`` is sealed by ``StateSealer`` (HMAC-SHA256
over the method, a digest of the request's own params, the answers so far, the principal
and an expiry). When the client retries with ``inputResponses``, ``StateSealer.open``
checks the seal and returns the earlier answers, so the handler can be run again from the
start and find every answer it asked for (see ``mcpsync.core.context.Context.request``).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from typing import Any, Sequence

from ..errors import HeaderMismatch, InvalidParams, McpError, UnsupportedProtocolVersion
from . import jsonrpc, versions

META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_CLIENT_INFO = "io.modelcontextprotocol/clientInfo"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
META_SERVER_INFO = "io.modelcontextprotocol/serverInfo"
META_SUBSCRIPTION = "io.modelcontextprotocol/subscriptionId"
TASKS_EXTENSION = "io.modelcontextprotocol/tasks"

COMPLETE = "complete"
INPUT_REQUIRED = "input_required"

#: Methods a modern request may name; anything else is -32601 (HTTP 404).
MODERN_METHODS = frozenset({
    "server/discover", "subscriptions/listen", "tools/list", "tools/call", "prompts/list",
    "prompts/get", "resources/list", "resources/templates/list", "resources/read",
    "completion/complete", "tasks/get", "tasks/update", "tasks/cancel",
})
#: Methods of the tasks extension (SEP-2663): -32021 for a request that did not declare it.
TASK_METHODS = frozenset({"tasks/get", "tasks/update", "tasks/cancel"})
#: Methods whose results are cacheable (ttlMs + cacheScope required).
CACHEABLE = frozenset({"server/discover", "tools/list", "prompts/list", "resources/list",
                       "resources/templates/list", "resources/read"})
#: Methods that may answer input_required.
MRTR_METHODS = frozenset({"tools/call", "prompts/get", "resources/read"})
#: Methods whose Mcp-Name header names a params field.
NAME_FIELDS = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri",
               "tasks/get": "taskId", "tasks/update": "taskId", "tasks/cancel": "taskId"}

LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
DEFAULT_TTL_MS = 0
STATE_TTL_S = 600.0
_SENTINEL = re.compile(r"^=\?base64\?([A-Za-z0-9+/=]*)\?=$")


def is_modern(params: Any) -> bool:
    """Whether a request's params carry the 2026-07-28 envelope."""
    if type(params) is not dict:
        return False
    meta = params.get("_meta")
    return type(meta) is dict and META_VERSION in meta


def is_modern_request(method: str, params: Any, header_version: str | None = None) -> bool:
    """The one rule that decides a request's era: modern (2026-07-28) when it is
    ``server/discover``, carries the envelope in ``params._meta``, or comes with a modern
    ``MCP-Protocol-Version`` header (HTTP); otherwise it belongs to a handshake-era session."""
    return (method == "server/discover" or is_modern(params)
            or (header_version is not None and header_version in versions.MODERN_VERSIONS))


def all_supported() -> list[str]:
    return list(versions.MODERN_VERSIONS) + list(reversed(versions.HANDSHAKE_VERSIONS))


class Envelope:
    """The validated per-request envelope of a modern request."""

    __slots__ = ("version", "capabilities", "client_info", "log_level")

    def __init__(self, version: str, capabilities: dict[str, Any], client_info: dict[str, Any],
                 log_level: str | None) -> None:
        self.version = version
        self.capabilities = capabilities
        self.client_info = client_info
        self.log_level = log_level


def check_envelope(params: Any) -> dict[str, Any]:
    """The envelope's shape, checked before anything else (-32602): ``params._meta`` must
    carry the protocol version (a string) and the client capabilities (an object)."""
    meta = params.get("_meta") if type(params) is dict else None
    if type(meta) is not dict:
        raise InvalidParams("Invalid params: params._meta must carry the protocol envelope")
    try:
        version_ok = type(meta[META_VERSION]) is str
        capabilities_ok = type(meta[META_CAPABILITIES]) is dict
    except KeyError:
        missing = [k for k in (META_VERSION, META_CAPABILITIES) if k not in meta]
        raise InvalidParams(f"Invalid params: params._meta is missing {', '.join(missing)}") from None
    if not version_ok:
        raise InvalidParams("Invalid params: the protocol version must be a string")
    if not capabilities_ok:
        raise InvalidParams("Invalid params: clientCapabilities must be an object")
    return meta


def request_envelope(params: dict[str, Any]) -> Envelope:
    """Validate ``params._meta`` of a modern request (raises the revision's errors)."""
    return envelope_of(check_envelope(params))


def envelope_of(meta: dict[str, Any]) -> Envelope:
    """The rest of ``request_envelope`` for a ``_meta`` that ``check_envelope`` passed (HTTP
    checks the shape before the headers, and the version after them)."""
    version = meta[META_VERSION]
    if version not in versions.MODERN_VERSIONS:
        raise UnsupportedProtocolVersion("Unsupported protocol version",
                                         {"supported": all_supported(), "requested": version})
    level = meta.get(META_LOG_LEVEL)
    if level is not None and level not in LOG_LEVELS:
        raise InvalidParams(f"Invalid params: unknown log level {level!r}")
    info = meta.get(META_CLIENT_INFO)
    return Envelope(version, meta[META_CAPABILITIES], info if type(info) is dict else {}, level)


def has_tasks(capabilities: dict[str, Any]) -> bool:
    """Whether a request's client capabilities declare the tasks extension."""
    ext = capabilities.get("extensions")
    return type(ext) is dict and type(ext.get(TASKS_EXTENSION)) is dict


def decode_header_value(value: str) -> str:
    """Decode the ``=?base64?…?=`` form of an Mcp-Name / Mcp-Param-* header value."""
    if not value.startswith("=?"):
        return value  # the usual plain value: no regex
    m = _SENTINEL.match(value)
    if m is None:
        return value
    try:
        return base64.b64decode(m.group(1), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise HeaderMismatch("Header mismatch: malformed base64 header value") from None


def header_params(input_schema: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The (argument, header name) pairs a tool's input schema mirrors into ``Mcp-Param-*``
    headers (``x-mcp-header``); computed once per tool."""
    props = input_schema.get("properties") if type(input_schema) is dict else None
    if type(props) is not dict:
        return ()
    return tuple((prop, str(sub["x-mcp-header"])) for prop, sub in props.items()
                 if type(sub) is dict and sub.get("x-mcp-header"))


def check_headers(headers: dict[str, str | None], msg: dict[str, Any],
                  params_in_headers: tuple[tuple[str, str], ...] = ()) -> Envelope:
    """All the checks of a modern request over HTTP, in the revision's order: the envelope's
    shape (``check_envelope``, -32602), the standard MCP request headers against the body
    (-32020 on any mismatch), then the rest of the envelope (``envelope_of``: the version,
    -32022). ``msg`` is a request (``jsonrpc.classify``); ``headers`` maps lower-case names
    to values (None when absent); ``params_in_headers`` is the called tool's
    ``header_params``."""
    params = msg.get("params") or {}
    meta = check_envelope(params)
    header_version = headers.get("mcp-protocol-version")
    if header_version != meta[META_VERSION]:
        if header_version is None:
            raise HeaderMismatch("Header mismatch: the MCP-Protocol-Version header is required")
        raise HeaderMismatch(f"Header mismatch: MCP-Protocol-Version {header_version!r} does not match "
                             f"the body's {meta[META_VERSION]!r}")
    method = msg["method"]
    header_method = headers.get("mcp-method")
    if header_method != method:
        raise HeaderMismatch(f"Header mismatch: Mcp-Method {header_method!r} does not match the body's {method!r}")
    field = NAME_FIELDS.get(method)
    if field is not None:
        raw = headers.get("mcp-name")
        if raw is None:
            raise HeaderMismatch(f"Header mismatch: the Mcp-Name header is required for {method}")
        body_name = params.get(field)
        if (decode_header_value(raw) if raw.startswith("=?") else raw) != body_name:
            raise HeaderMismatch(f"Header mismatch: Mcp-Name {raw!r} does not match the body's {body_name!r}")
    if params_in_headers and method == "tools/call":
        _check_param_headers(headers, params.get("arguments") or {}, params_in_headers)
    return envelope_of(meta)


def _check_param_headers(headers: dict[str, str | None], args: dict[str, Any],
                         params_in_headers: tuple[tuple[str, str], ...]) -> None:
    for prop, name in params_in_headers:
        raw = headers.get(f"mcp-param-{str(name).lower()}")
        value = args.get(prop) if type(args) is dict else None
        if value is None:
            if raw is not None:
                raise HeaderMismatch(f"Header mismatch: Mcp-Param-{name} sent without the argument")
            continue
        if raw is None:
            raise HeaderMismatch(f"Header mismatch: the Mcp-Param-{name} header is required")
        text = decode_header_value(raw)
        if type(value) is bool:
            ok = text == ("true" if value else "false")
        elif type(value) is int:
            try:
                ok = int(text) == value
            except ValueError:
                ok = False
        else:
            ok = text == value
        if not ok:
            raise HeaderMismatch(f"Header mismatch: Mcp-Param-{name} does not match the argument {prop!r}")


def decorate_result(method: str, result: dict[str, Any], server_meta: dict[str, Any], *,
                    ttl_ms: int = DEFAULT_TTL_MS, cache_scope: str = "private") -> dict[str, Any]:
    """Add ``resultType``, the server identity (``server_meta``: ``{META_SERVER_INFO: info}``,
    shared, never mutated) and (for cacheable results) the cache hints. ``result`` is the
    handler's fresh dict and is completed in place (the hot path copies nothing)."""
    out = result
    if "resultType" not in out:
        out["resultType"] = COMPLETE
    meta = out.get("_meta")
    out["_meta"] = {**meta, **server_meta} if meta else server_meta
    if method in CACHEABLE and out["resultType"] == COMPLETE:
        out.setdefault("ttlMs", ttl_ms)
        out.setdefault("cacheScope", cache_scope)
    return out


class SharedMeta(dict[str, Any]):
    """A ``_meta`` that many results share and none mutates (making one is that promise):
    the server's identity, which ``decorate_result`` puts on every result. Its text is
    encoded once: ``encode_response`` appends it rather than encode it again. Anywhere
    else it is the plain object it holds."""

    __slots__ = ("closing", "closing_complete")

    def __init__(self, members: dict[str, Any]) -> None:
        super().__init__(members)
        text = jsonrpc.encode(members)
        # What ends the result and the message: the meta, or resultType "complete" and it.
        self.closing = b',"_meta":' + text + b"}}"
        self.closing_complete = b',"resultType":"' + COMPLETE.encode() + b'","_meta":' + text + b"}}"


def encode_response(msg: dict[str, Any]) -> bytes:
    """``jsonrpc.encode`` for a response (``result`` its last member, as ``jsonrpc.response``
    builds it) whose result has a ``SharedMeta``: the rest of it is encoded, and the meta's
    text (with ``"resultType":"complete"``, when the result says so) is put at the result's
    end. The same JSON as ``jsonrpc.encode`` gives, byte for byte when those were the
    result's last members already (``decorate_result`` puts them there). ``msg`` is put
    back as it was, and the result is not touched (it may be a handler's shared dict)."""
    result = msg.get("result")
    if type(result) is dict and len(msg) == 3:  # jsonrpc, id, result: nothing after it
        meta = result.get("_meta")
        if type(meta) is SharedMeta:
            rest = result.copy()
            del rest["_meta"]
            closing = meta.closing
            if rest.get("resultType") == COMPLETE:
                del rest["resultType"]
                closing = meta.closing_complete
            if rest:  # else there is no "{...}" to end: encoded as it is
                msg["result"] = rest
                try:
                    head = jsonrpc.encode(msg)  # ...,"result":{...}}
                finally:
                    msg["result"] = result
                return head[:-2] + closing
    return jsonrpc.encode(msg)


def http_status(error: McpError | dict[str, Any]) -> int:
    """The HTTP status of a modern-era error response."""
    code = error.code if isinstance(error, McpError) else error.get("code")
    if code == -32601:
        return 404
    if code in (-32700, -32600, -32602, -32020, -32021, -32022):
        return 400
    return 200


class InputRequired(Exception):
    """Raised (by ``Context.ask`` in the modern era) when a handler needs answers from the
    client that the request does not carry yet: ``requests`` maps each missing key to its
    request. Not an ``McpError``: it is control flow, turned into an ``input_required``
    result by the request's driver."""

    def __init__(self, requests: dict[str, dict[str, Any]]) -> None:
        super().__init__(", ".join(requests))
        self.requests = requests


class BeginTask(Exception):
    """Raised by ``Context.begin_task`` in a call that may still become a task: control
    flow, caught by the driver, which creates the task and runs the tool again on it."""


def params_digest(method: str, params: dict[str, Any]) -> str:
    """A digest of what identifies a request across retries (not its answers or envelope)."""
    core = {k: v for k, v in params.items() if k not in ("_meta", "inputResponses", "requestState")}
    data = json.dumps([method, core], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(data.encode()).hexdigest()[:32]


class StateSealer:
    """Seal and open ``requestState`` blobs with HMAC-SHA256 under a server secret.
    ``secret`` may be a sequence of keys (rotation, ``mcpsync.state.keyring``): the first
    seals, any of them opens."""

    def __init__(self, secret: bytes | Sequence[bytes], ttl_s: float = STATE_TTL_S) -> None:
        keys = (secret,) if isinstance(secret, bytes) else tuple(secret)
        if not keys or any(len(k) < 16 for k in keys):
            raise ValueError("the requestState secret must be at least 16 bytes")
        self._secret = keys[0]
        self._keys = keys
        self.ttl_s = ttl_s

    def seal(self, *, method: str, digest: str, answers: dict[str, Any], principal: str | None,
             now: float) -> str:
        payload = json.dumps({"m": method, "d": digest, "a": answers, "p": principal,
                              "x": int(now + self.ttl_s)}, separators=(",", ":")).encode()
        mac = hmac.new(self._secret, payload, hashlib.sha256).digest()
        return (base64.urlsafe_b64encode(payload).decode().rstrip("=") + "."
                + base64.urlsafe_b64encode(mac).decode().rstrip("="))

    def open(self, state: Any, *, method: str, digest: str, principal: str | None,
             now: float) -> dict[str, Any]:
        """The answers sealed in ``state``; ``InvalidParams`` if it was tampered with, expired,
        or belongs to another request or principal."""
        if type(state) is not str or "." not in state:
            raise InvalidParams("Invalid params: malformed requestState")
        body, _, mac = state.partition(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
        except ValueError:
            raise InvalidParams("Invalid params: malformed requestState") from None
        if not any(hmac.compare_digest(given, hmac.new(k, payload, hashlib.sha256).digest())
                   for k in self._keys):
            raise InvalidParams("Invalid params: requestState failed verification")
        data = json.loads(payload)
        if data.get("x", 0) < now:
            raise InvalidParams("Invalid params: requestState expired; send the request again without it")
        if data.get("m") != method or data.get("d") != digest or data.get("p") != principal:
            raise InvalidParams("Invalid params: requestState belongs to another request")
        answers = data.get("a")
        return answers if type(answers) is dict else {}
