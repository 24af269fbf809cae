"""mcpsync's HTTP/1.1 front end: a selector thread owns every waiting socket, a FIFO worker
pool runs complete requests through a WSGI app (see ``server.py`` and ARCHITECTURE.md)."""
from __future__ import annotations

from .limits import Limits
from .server import SHUTDOWN_TIMEOUT_S, FrontEnd, HttpFrontEnd, WerkzeugServer, make_server

__all__ = ["SHUTDOWN_TIMEOUT_S", "FrontEnd", "HttpFrontEnd", "Limits", "WerkzeugServer",
           "make_server"]
