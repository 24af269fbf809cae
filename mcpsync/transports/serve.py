"""The HTTP front end's former home: it now lives in ``mcpsync.frontend`` (a dispatcher
thread for waiting sockets and a FIFO worker pool; see ARCHITECTURE.md). Re-exported here
for code that imported it from this module."""
from __future__ import annotations

from ..frontend import SHUTDOWN_TIMEOUT_S, FrontEnd, HttpFrontEnd, Limits, WerkzeugServer, make_server

__all__ = ["SHUTDOWN_TIMEOUT_S", "FrontEnd", "HttpFrontEnd", "Limits", "WerkzeugServer",
           "make_server"]
