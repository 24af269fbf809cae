"""Thread synchronization primitives for mcpsync: ``FIFOMutex`` and ``KeyedMutex``.

``FIFOMutex`` grants ownership in strict arrival order, handing the lock directly to the
longest waiter on release; ``KeyedMutex`` keeps one ``FIFOMutex`` per key in use and forgets
keys nobody holds. This package imports only ``threading``, ``collections``, ``time``,
``typing`` and ``mcpsync.errors``.
"""
from __future__ import annotations

from .fifo import FIFOMutex, MutexStats
from .keyed import KeyedMutex

__all__ = ["FIFOMutex", "KeyedMutex", "MutexStats"]
