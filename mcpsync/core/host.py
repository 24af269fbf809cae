"""What the core needs of the layers around it, as narrow protocols: what a
``ServerConnection`` needs of the server it serves (``SessionHost``), what a ``Context``
needs of a running task (``TaskControl``), where ``tools/call`` hands a task
(``TaskRouter``). So the protocol state of a session never reaches into the server's
internals, and the core never imports the server or the tasks package.
"""
from __future__ import annotations

from typing import Any, Protocol

from ..protocol.dispatch import Dispatcher


class SessionHost(Protocol):
    """The server as one session's connection sees it (``mcpsync.server.Server``)."""

    dispatcher: Dispatcher  # the method table: handlers for requests and notifications

    def initialize_result(self, version: str) -> dict[str, Any]:
        """The result of ``initialize`` for the negotiated revision."""
        ...

    def server_meta(self, version: str | None) -> dict[str, Any]:
        """``_meta`` naming the server, for 2026-07-28 results."""
        ...

    def mrtr_answers(self, method: str, params: dict[str, Any],
                     principal: str | None) -> dict[str, Any]:
        """A retried multi round-trip request's answers so far (sealed and new)."""
        ...

    def mrtr_state(self, method: str, params: dict[str, Any], answers: dict[str, Any],
                   principal: str | None) -> str:
        """The sealed ``requestState`` carrying ``answers`` to the next round."""
        ...

    def session_closed(self, conn: Any) -> None:
        """A session's connection ended: forget it, run the session-closed hooks."""
        ...


class TaskControl(Protocol):
    """A running task as its tool's ``Context`` sees it (``mcpsync.tasks.TaskHandle``)."""

    def ask(self, requests: dict[str, dict[str, Any]],
            timeout: float | None) -> dict[str, dict[str, Any]]:
        """Put input requests to the client and wait for all their answers."""
        ...


class TaskRouter(Protocol):
    """Where ``tools/call`` hands a task-capable tool (``mcpsync.tasks.TaskManager``)."""

    def route(self, tool: Any, params: dict[str, Any], ctx: Any) -> dict[str, Any] | None:
        """A ``CreateTaskResult`` if the call became a task, else None (run it here)."""
        ...

    def start(self, tool: Any, params: dict[str, Any], ctx: Any,
              answers: dict[str, Any]) -> dict[str, Any]:
        """Start the call as a task now (a ``defer_task`` tool reached ``begin_task``)."""
        ...
