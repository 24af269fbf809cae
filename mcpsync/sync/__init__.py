"""Thread synchronization primitives for mcpsync: ``FIFOMutex``, ``KeyedMutex``, ``CpuGate``.

``FIFOMutex`` grants ownership in strict arrival order, handing the lock directly to the
longest waiter on release; ``KeyedMutex`` keeps one ``FIFOMutex`` per key in use and forgets
keys nobody holds; ``CpuGate`` queues request threads for the CPU-bound part of their
work. This package imports only ``threading``, ``collections``, ``time``, ``typing`` and
``mcpsync.errors``.
"""
from __future__ import annotations

from .fifo import FIFOMutex, MutexStats
from .gate import CpuGate, gate_paused, held_gate, leave_gate
from .keyed import KeyedMutex

__all__ = ["CpuGate", "FIFOMutex", "KeyedMutex", "MutexStats", "gate_paused", "held_gate", "leave_gate"]
