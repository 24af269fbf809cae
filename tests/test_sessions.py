"""SessionStore: atomic get-or-create, limits, expiry, isolation, close hooks.

Race tests say how often they repeat; every wait is bounded.
"""
from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from mcpsync.errors import SessionLimitError
from mcpsync.sessions import Session, SessionStore, new_session_id

WAIT_S = 10.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Handler:
    """A per-session protocol handler stand-in with private mutable state."""

    def __init__(self) -> None:
        self.state: dict[str, object] = {}
        self.closed = threading.Event()

    def close(self) -> None:
        self.closed.set()


def factory(sid: str) -> Session:
    return Session(sid, Handler())


def test_session_ids_are_unguessable_and_url_safe() -> None:
    ids = {new_session_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    for sid in list(ids)[:100]:
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", sid)  # 192 bits, visible ASCII


def test_create_get_delete_idempotent() -> None:
    store = SessionStore()
    s = store.create(factory)
    assert store.get(s.id) is s and len(store) == 1 and s.id in store
    assert store.delete(s.id) is True
    assert store.delete(s.id) is False
    assert store.get(s.id) is None and len(store) == 0
    assert s.handler.closed.is_set() and s.closed


def test_concurrent_initialization_race() -> None:
    """The design notes' scenario: 3 clients initialize at the same instant; each gets its own
    session and handler. Repeated 500 times."""
    for _ in range(500):
        store = SessionStore()
        barrier = threading.Barrier(3, timeout=WAIT_S)

        def client() -> Session:
            barrier.wait()
            return store.create(factory)

        with ThreadPoolExecutor(3) as pool:
            sessions = [f.result(WAIT_S) for f in [pool.submit(client) for _ in range(3)]]
        assert len({s.id for s in sessions}) == 3
        assert len({id(s.handler) for s in sessions}) == 3
        assert len(store) == 3


def test_get_or_create_race_creates_exactly_one() -> None:
    """50 threads race get_or_create on one id; exactly one session is built. Repeated 100 times."""
    for _ in range(100):
        store = SessionStore()
        built = []
        built_lock = threading.Lock()

        def counting_factory(sid: str) -> Session:
            with built_lock:
                built.append(sid)
            return factory(sid)

        barrier = threading.Barrier(50, timeout=WAIT_S)

        def racer() -> tuple[Session, bool]:
            barrier.wait()
            return store.get_or_create("shared-id", counting_factory)

        with ThreadPoolExecutor(50) as pool:
            results = [f.result(WAIT_S) for f in [pool.submit(racer) for _ in range(50)]]
        assert len(built) == 1
        assert len({id(s) for s, _ in results}) == 1
        assert sum(created for _, created in results) == 1


def test_http_session_mutex_contention_store_level() -> None:
    """10 parallel operations on one session all see that same session and none is lost."""
    store = SessionStore()
    s = store.create(factory)
    counter_lock = threading.Lock()
    barrier = threading.Barrier(10, timeout=WAIT_S)

    def op(i: int) -> bool:
        barrier.wait()
        got = store.get(s.id)
        assert got is s
        with counter_lock:
            got.handler.state[f"op{i}"] = i
        return True

    for _ in range(200):
        s.handler.state.clear()
        with ThreadPoolExecutor(10) as pool:
            assert all(f.result(WAIT_S) for f in [pool.submit(op, i) for i in range(10)])
        assert len(s.handler.state) == 10


def test_session_state_isolation() -> None:
    store = SessionStore()
    a, b = store.create(factory), store.create(factory)
    a.handler.state["level"] = "debug"
    assert "level" not in b.handler.state
    store.delete(a.id)
    assert store.get(b.id) is b and not b.handler.closed.is_set()


def test_max_sessions_raises_typed_error() -> None:
    store = SessionStore(max_sessions=2)
    store.create(factory)
    store.create(factory)
    with pytest.raises(SessionLimitError):
        store.create(factory)
    with pytest.raises(SessionLimitError):
        store.get_or_create("x", factory)
    assert len(store) == 2


def test_max_sessions_holds_under_a_race() -> None:
    """64 threads create at once against a limit of 10: exactly 10 succeed. Repeated 50 times."""
    for _ in range(50):
        store = SessionStore(max_sessions=10)
        barrier = threading.Barrier(64, timeout=WAIT_S)

        def attempt() -> bool:
            barrier.wait()
            try:
                store.create(factory)
                return True
            except SessionLimitError:
                return False

        with ThreadPoolExecutor(64) as pool:
            ok = [f.result(WAIT_S) for f in [pool.submit(attempt) for _ in range(64)]]
        assert sum(ok) == 10 and len(store) == 10


def test_idle_ttl_expiry_with_injected_clock() -> None:
    clock = FakeClock()
    store = SessionStore(idle_ttl_s=60, clock=clock)
    old, fresh = store.create(factory), store.create(factory)
    clock.now += 50
    store.touch(fresh.id)
    clock.now += 20  # old idle 70 s, fresh idle 20 s
    assert store.reap() == 1
    assert store.get(old.id) is None and old.handler.closed.is_set()
    assert store.get(fresh.id) is fresh
    assert store.expired_total == 1


def test_reaper_thread_expires_and_is_joined_on_close() -> None:
    clock = FakeClock()
    store = SessionStore(idle_ttl_s=1, reap_interval_s=0.01, clock=clock)
    s = store.create(factory)
    clock.now += 5
    store.start()
    assert s.handler.closed.wait(WAIT_S)
    assert any(t.name == "mcpsync-session-reaper" for t in threading.enumerate())
    store.close()
    assert not any(t.name == "mcpsync-session-reaper" for t in threading.enumerate())


def test_close_hooks_run_outside_the_lock_and_may_reenter() -> None:
    store = SessionStore()
    s = store.create(factory)
    seen = []

    def hook(sess: Session) -> None:
        # Re-entering the store from another thread would deadlock if the lock were held.
        t = threading.Thread(target=lambda: seen.append(len(store)))
        t.start()
        t.join(WAIT_S)

    s.on_close(hook)
    store.delete(s.id)
    assert seen == [0]


def test_failing_close_hook_does_not_stop_others(caplog: pytest.LogCaptureFixture) -> None:
    store = SessionStore()
    s = store.create(factory)
    ran = []
    s.on_close(lambda _s: 1 / 0)
    s.on_close(lambda _s: ran.append(True))
    store.delete(s.id)
    assert ran == [True] and s.handler.closed.is_set()
    assert "close hook failed" in caplog.text


def test_concurrent_delete_closes_once() -> None:
    """20 threads delete the same session; exactly one reports removal, hooks run once.
    Repeated 200 times."""
    for _ in range(200):
        store = SessionStore()
        s = store.create(factory)
        calls = []
        s.on_close(lambda _s: calls.append(1))
        barrier = threading.Barrier(20, timeout=WAIT_S)

        def deleter() -> bool:
            barrier.wait()
            return store.delete(s.id)

        with ThreadPoolExecutor(20) as pool:
            results = [f.result(WAIT_S) for f in [pool.submit(deleter) for _ in range(20)]]
        assert sum(results) == 1 and calls == [1]


def test_snapshot_iteration_while_mutating() -> None:
    store = SessionStore()
    for _ in range(100):
        store.create(factory)
    for sess in store:  # iterating a snapshot: deleting inside the loop is safe
        store.delete(sess.id)
    assert len(store) == 0
