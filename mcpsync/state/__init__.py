"""Shared state for running several mcpsync processes behind a load balancer (see
``backend`` for the theory of operation and ``ARCHITECTURE.md``, "Scale-out")."""
from __future__ import annotations

from .backend import MemoryBackend, StateBackend, StateUnavailable
from .bus import NotificationBus
from .keyring import KeyRing, parse_secrets
from .shared import SharedState

__all__ = ["MemoryBackend", "KeyRing", "NotificationBus", "SharedState", "StateBackend",
           "StateUnavailable", "parse_secrets"]
