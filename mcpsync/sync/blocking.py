"""``may_block()``: marks code that may block, for whoever runs the calling thread.

Why
---
The HTTP front end lets only a few requests run Python at once, in arrival order (its
worker pool, ``mcpsync.frontend.pool``). A request that waits — in a tool, resource, prompt
or completion function (which may sleep, call out, or wait for the client's answer to an
elicitation), or in a hook that ends a session — must give its turn to the next one while
it waits, and queue for a turn again afterwards. The code that knows where such waits are
(``core.calls``, ``core.connection``, ``core.broadcast``, a transport's writers) must not
know about the pool, so it only says::

    with may_block():
        value = tool.fn(**kwargs)

A pool worker thread installs its hook (``install_hook``) for as long as it lives; the hook
gives up the worker's slot on entry and takes one again on exit. On every other thread
(the stdio reader, a message stream's own workers, a WebSocket's reader threads under
werkzeug or gunicorn, their request threads, task threads) no hook is installed and
``may_block()`` is a no-op costing one attribute lookup.

``may_block(key)`` names what is about to run (a tool's function): a hook may remember how
long each key blocked last time, so that it hands its turn on at once for code that
sleeps for milliseconds and keeps it for code that returns in microseconds.

The hook is per thread (``threading.local``) because which slot a thread holds is a fact
about that thread. A hook must tolerate nesting on its thread (only the outermost block
acts) and must never raise out of ``__exit__``.
"""
from __future__ import annotations

import threading
from typing import Any, Hashable, Protocol


class BlockingHook(Protocol):
    """A context manager run around code that may block, on one thread; ``key`` is set
    just before ``__enter__``."""

    key: Hashable

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc_info: object) -> Any: ...


class _NoHook:
    __slots__ = ()
    key: Hashable = None

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


_NO_HOOK = _NoHook()
_local = threading.local()  # .hook: the calling thread's BlockingHook, if one is installed


def may_block(key: Hashable = None) -> BlockingHook:
    """``with may_block(): ...`` around code that may wait (see the module docstring)."""
    hook: BlockingHook | None = getattr(_local, "hook", None)
    if hook is None:
        return _NO_HOOK
    hook.key = key
    return hook


def install_hook(hook: BlockingHook | None) -> None:
    """Install ``hook`` for the calling thread (None removes it)."""
    _local.hook = hook


def current_hook() -> BlockingHook | None:
    """The calling thread's hook, if any."""
    hook: BlockingHook | None = getattr(_local, "hook", None)
    return hook
