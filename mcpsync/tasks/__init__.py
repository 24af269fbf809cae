"""The tasks extension (SEP-2663, ``io.modelcontextprotocol/tasks``) on plain threads:
records in a ``TaskStore`` (``store``), a bounded ``TaskPool`` of threads (``pool``), and the
``TaskManager`` that ties them to a server (``runtime``)."""
from .pool import TASK_THREADS, TaskPool
from .runtime import TaskHandle, TaskManager, wire_task
from .store import (CANCELLED, COMPLETED, FAILED, INPUT_REQUIRED, TERMINAL, WORKING,
                    MemoryTaskStore, TaskLimitError, TaskRecord, TaskStore)

__all__ = ["TASK_THREADS", "TaskPool", "TaskHandle", "TaskManager", "wire_task", "CANCELLED",
           "COMPLETED", "FAILED", "INPUT_REQUIRED", "TERMINAL", "WORKING", "MemoryTaskStore",
           "TaskLimitError", "TaskRecord", "TaskStore"]
