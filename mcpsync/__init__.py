"""mcpsync: a Model Context Protocol server framework and hub for synchronous Python.

Everything runs on plain threads; there is no asyncio at run time.
"""
from __future__ import annotations

from ._version import __version__

from . import inputs
from .core.context import Context
from .content import Audio, Image, Resource, ResourceLink, Text, ToolResult
from .errors import DefinitionError, McpError, ResourceError, ResourceNotFound, ToolError
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
