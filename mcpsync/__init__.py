"""mcpsync: a Model Context Protocol server framework, client and hub for synchronous Python.

Everything runs on plain threads; there is no asyncio at run time. The client's result
types live in ``mcpsync.client``.
"""
from __future__ import annotations

from ._version import __version__

from . import inputs
from .core.context import Context
from .content import Audio, Image, Resource, ResourceLink, Text, ToolResult
from .client import CallToolResult, CancelToken, Client, Task
from .errors import (Cancelled, ConnectionClosed, DefinitionError, McpError, PeerError, RequestTimeout,
                     ResourceError, ResourceNotFound, ToolError)
from .server import Server
from .run import build_wsgi_app, serve
from .sessions import Session, SessionStore
from .sync import FIFOMutex, KeyedMutex

__all__ = [
    "__version__",
    "inputs",
    "Audio",
    "Context",
    "Image",
    "Resource",
    "ResourceLink",
    "Server",
    "build_wsgi_app",
    "CallToolResult",
    "Cancelled",
    "CancelToken",
    "Client",
    "ConnectionClosed",
    "PeerError",
    "RequestTimeout",
    "Task",
    "serve",
    "Text",
    "ToolResult",
    "FIFOMutex",
    "KeyedMutex",
    "DefinitionError",
    "McpError",
    "ResourceError",
    "ResourceNotFound",
    "Session",
    "SessionStore",
    "ToolError",
]
