"""Test-wide fixtures: a thread that dies with an exception fails the test it happened in."""
from __future__ import annotations

import threading
from typing import Any, Iterator

import pytest

_thread_failures: list[str] = []
_failures_lock = threading.Lock()  # guards _thread_failures; taken by dying threads and the fixture


def _excepthook(args: Any) -> None:
    name = args.thread.name if args.thread is not None else "?"
    with _failures_lock:
        _thread_failures.append(f"{name}: {args.exc_type.__name__}: {args.exc_value}")


@pytest.fixture(autouse=True)
def fail_on_thread_death() -> Iterator[None]:
    previous = threading.excepthook
    threading.excepthook = _excepthook
    try:
        yield
    finally:
        threading.excepthook = previous
        with _failures_lock:
            failures = list(_thread_failures)
            _thread_failures.clear()
        if failures:
            pytest.fail("thread(s) died during the test: " + "; ".join(failures))
