"""``NotificationBus``: a server's notifications to every instance of the deployment.

``Server.notify_list_changed(kind)`` and ``Server.notify_resource_updated(uri)`` deliver to
this process's sessions and listen streams at once, then hand the message to the bus
(the ``Server.publish`` hook), which publishes it through the state backend tagged with
this instance's id. Every instance's bus receives it; the others deliver it to their own
sessions and listen streams (``Server.deliver_*``), the publisher skips it (it delivered
already). Task status notifications do not travel here: they follow the tasks store's
announcements (``StateBackend.task_store``'s ``watch``).

Delivery is best effort, like the notifications themselves: a message published while the
backend is out of reach is dropped, and an instance that was cut off does not replay what
it missed.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .backend import Message, StateBackend

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("mcpsync.state")

LIST_KINDS = frozenset({"tools", "prompts", "resources"})


class NotificationBus:
    """Carries one server's notifications to the other instances, and theirs to it."""

    def __init__(self, server: "Server", backend: StateBackend, instance: str) -> None:
        self.server = server
        self.backend = backend
        self.instance = instance

    def attach(self) -> None:
        self.backend.subscribe(self._receive)
        self.server.publish = self.publish

    def publish(self, message: dict[str, Any]) -> None:
        self.backend.publish({**message, "o": self.instance})

    def _receive(self, message: Message) -> None:
        if message.get("o") == self.instance:
            return  # ours: delivered in this process when it was sent
        kind = message.get("k")
        if kind == "list" and message.get("kind") in LIST_KINDS:
            self.server.deliver_list_changed(message["kind"])
        elif kind == "resource" and type(message.get("uri")) is str:
            self.server.deliver_resource_updated(message["uri"])
        else:
            log.debug("state bus: ignored a message of kind %r", kind)
