"""mcpsync as an MCP *client*: ``Client`` (the public synchronous client, ``client.py``) on
``ClientSession`` (one session with one server over any transport: ``channels/``), which
the hub also uses for its upstreams. The result types are in ``results.py``."""
from ..errors import Cancelled, ConnectionClosed, McpError, PeerError, RequestTimeout
from .caller import CancelToken
from .client import Client
from .results import (CallToolResult, Completion, Content, GetPromptResult, LogMessage, Prompt,
                      PromptArgument, PromptMessage, ReadResourceResult, Resource, ResourceContents,
                      ResourceTemplate, ServerInfo, Tool)
from .task import Task

__all__ = ["Client", "CancelToken", "Task", "CallToolResult", "Completion", "Content",
           "GetPromptResult", "LogMessage", "Prompt", "PromptArgument", "PromptMessage",
           "ReadResourceResult", "Resource", "ResourceContents", "ResourceTemplate", "ServerInfo",
           "Tool", "Cancelled", "ConnectionClosed", "McpError", "PeerError", "RequestTimeout"]
