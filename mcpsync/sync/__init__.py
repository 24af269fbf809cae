"""Thread synchronization primitives for mcpsync: ``FIFOMutex``, ``KeyedMutex``, ``may_block``.

``FIFOMutex`` grants ownership in strict arrival order, handing the lock directly to the
longest waiter on release; ``KeyedMutex`` keeps one ``FIFOMutex`` per key in use and forgets
keys nobody holds; ``may_block()`` marks code that may wait, for a worker pool that runs the
thread (``blocking.py``). This package imports only ``threading``, ``collections``, ``time``,
``typing`` and ``mcpsync.errors``.
"""
from __future__ import annotations

from .blocking import may_block
from .fifo import FIFOMutex, MutexStats
from .keyed import KeyedMutex

__all__ = ["FIFOMutex", "KeyedMutex", "MutexStats", "may_block"]
