"""What every channel is: ``Channel``, the protocol a ``ClientSession`` drives (a spawned
stdio process, a Streamable HTTP endpoint, a WebSocket, a legacy SSE endpoint), and
``Deliver``, how a channel hands each incoming message to its session."""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Protocol

from ...protocol import jsonrpc

from ..correlator import Call
from ..endpoint import Endpoint

log = logging.getLogger("mcpsync.client")

Deliver = Callable[[dict[str, Any], "Call | None"], None]


class Channel(Protocol):
    """How a session moves messages (implemented per transport)."""

    transport: str
    modern: bool          # set by the session once 2026-07-28 is negotiated (HTTP headers)

    def open(self, deliver: Deliver, lost: Callable[[str], None], timeout: float) -> None:
        """Connect / spawn (blocks up to ``timeout``). ``deliver(msg, call)`` takes every
        incoming message (``call``: the request whose stream carried it, if the transport
        knows); ``lost(reason)`` is called once when the connection dies."""

    def send(self, msg: dict[str, Any], call: Call | None = None) -> None:
        """Send one message. A request sent for ``call`` may instead install ``call.pump``
        (HTTP: the POST happens on the waiting thread). Raises ``ConnectionClosed``."""

    def end(self, call: Call) -> None:
        """The call is over: release what its request held (an HTTP response stream)."""

    def info(self) -> dict[str, Any]:
        """Health details (pid, url, session id ...)."""

    def close(self) -> None:
        """Disconnect and release everything (joins the channel's threads; bounded)."""


def _ignore_message(msg: dict[str, Any], call: Call | None) -> None:
    return None


def _ignore_loss(reason: str) -> None:
    return None


class ChannelBase:
    """The fields every channel has: its endpoint, the era flag, and the session's two
    callbacks (no-ops until ``open``; each channel calls ``attach`` first thing there)."""

    transport: str

    def __init__(self, cfg: Endpoint) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.modern = False
        self._deliver: Deliver = _ignore_message
        self._lost: Callable[[str], None] = _ignore_loss

    def attach(self, deliver: Deliver, lost: Callable[[str], None]) -> None:
        self._deliver, self._lost = deliver, lost

    def deliver_all(self, msgs: Iterable[Any], call: Call | None) -> None:
        """Hand each message to the session; a failure is logged and the next one goes on."""
        for msg in msgs:
            try:
                self._deliver(msg, call)
            except Exception:
                log.exception("upstream %s: handling a message failed", self.name)

    def deliver_text(self, data: str | bytes, call: Call | None, unit: str) -> None:
        """Decode one ``unit`` (an SSE event, a WebSocket frame) holding a message or a
        batch and deliver what it holds; text that is not JSON is logged and dropped."""
        try:
            value = jsonrpc.decode(data)
        except Exception:
            log.warning("upstream %s sent a non-JSON %s: %.200r", self.name, unit, data)
            return
        self.deliver_all(value if isinstance(value, list) else [value], call)

    @property
    def url(self) -> str:
        assert self.cfg.url is not None, f"{self.transport} needs a URL"
        return self.cfg.url
