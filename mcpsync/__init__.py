"""mcpsync: a Model Context Protocol server framework and hub for synchronous Python.

Everything runs on plain threads; there is no asyncio at run time.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import McpError, ToolError
from .sessions import Session, SessionStore
from .sync import FIFOMutex, KeyedMutex

__all__ = [
    "__version__",
    "FIFOMutex",
    "KeyedMutex",
    "McpError",
    "Session",
    "SessionStore",
    "ToolError",
]
