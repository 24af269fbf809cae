"""The one request runner for both eras: a handler's outcome becomes the reply, and every
exception becomes a wire error here (through ``dispatch.wire_error``) and nowhere else.

``run(rid, method, call, on_input=...)`` calls ``call()`` and returns the response to send:
its result, the result ``on_input`` makes of an ``InputRequired`` (the modern era's
``input_required``; without ``on_input`` it is an internal error), None for a cancelled
request (nothing is sent), or the error response for anything raised. Sans-IO: the
caller (``core.connection``) owns the thread, the lock and the bookkeeping around it.
"""
from __future__ import annotations

from typing import Any, Callable

from ..errors import Cancelled
from .dispatch import wire_error
from .jsonrpc import error_response, response
from .modern import InputRequired

Result = dict[str, Any]


def run(rid: Any, method: str, call: Callable[[], Result], *,
        on_input: Callable[[InputRequired], Result] | None = None) -> Result | None:
    """The reply to request ``rid`` (see the module docstring)."""
    try:
        return response(rid, call())
    except InputRequired as need:
        if on_input is None:
            return error_response(rid, wire_error(need, method))
        try:
            return response(rid, on_input(need))
        except Exception as exc:
            return error_response(rid, wire_error(exc, method))
    except Cancelled:
        return None
    except Exception as exc:
        return error_response(rid, wire_error(exc, method))
