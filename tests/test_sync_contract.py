"""The mutex contract, after CPython's Lib/test/lock_tests.py, plus FIFOMutex's own promises.

The contract tests run against ``FIFOMutex``, one key of a ``KeyedMutex`` (through
``KeyLock``) and ``threading.Lock`` as the control, so a test that fails only for ours points
at our code rather than at the test. FIFO-specific tests (order, hand-off, no barging, the
seed-001 regression) run against ``FIFOMutex`` and the ``KeyedMutex`` key only.

Threads are synchronized with events, barriers and the mutex's own observable state; where a
test must wait for "thread N is queued" it spins on ``queue_depth`` with a deadline
(``wait_until``). No test sleeps for a fixed time, and every wait is bounded.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Iterable

import pytest

import mcpsync.sync.fifo as fifo_module
from mcpsync.sync import FIFOMutex, KeyedMutex, MutexStats
from mcpsync.sync.fifo import WAIT_BUCKETS_S

JOIN_TIMEOUT_S = 20.0  # upper bound for any helper thread to finish
WAIT_TIMEOUT_S = 10.0  # upper bound for an observable condition to become true
LONG_ACQUIRE_S = 10.0  # timeout for acquires that must succeed (bounded, never hit)
SHORT_TIMEOUT_S = 0.05  # timeout for acquires that must fail

FIFO_THREADS = 32
FIFO_ROUNDS = 5
SEED_001_ROUNDS = 1000
LOST_WAKEUP_THREADS = 8
LOST_WAKEUP_CYCLES = 20_000
EXCLUSION_THREADS = 8
EXCLUSION_CYCLES = 500


# ---- helpers -------------------------------------------------------------------------------

def start(target: Callable[..., Any], *args: Any, name: str = "test-worker") -> threading.Thread:
    """Start a daemon thread (daemon so a hung test cannot hang the interpreter)."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    thread.start()
    return thread


def join_all(threads: Iterable[threading.Thread], timeout: float = JOIN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        assert not thread.is_alive(), f"{thread.name} did not finish within {timeout} s"


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_TIMEOUT_S) -> None:
    """Spin (yielding the GIL) until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0)  # a yield, not a timed wait: the predicate is what we wait on


class KeyLock:
    """One key of a ``KeyedMutex`` behind the ``threading.Lock`` API, for the contract suite."""

    def __init__(self) -> None:
        self.keyed: KeyedMutex[str] = KeyedMutex()
        self.key = "the-key"

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not blocking:
            if timeout != -1:
                raise ValueError("can't specify a timeout for a non-blocking call")
            return self.keyed.acquire(self.key, 0)
        return self.keyed.acquire(self.key, timeout)

    def release(self) -> None:
        self.keyed.release(self.key)

    def locked(self) -> bool:
        return self.keyed.locked(self.key)

    def queue_depth(self) -> int:
        with self.keyed._lock:
            entry = self.keyed._entries.get(self.key)
            return 0 if entry is None else entry.mutex.stats().queue_depth

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def queue_depth(lock: Any) -> int:
    return lock.queue_depth() if isinstance(lock, KeyLock) else lock.stats().queue_depth


LOCK_FACTORIES: dict[str, Callable[[], Any]] = {
    "FIFOMutex": FIFOMutex,
    "KeyedMutex-key": KeyLock,
    "threading.Lock": threading.Lock,
}
OWNED = ["FIFOMutex", "KeyedMutex-key"]  # the kinds with owners, FIFO order and a queue


@pytest.fixture(params=list(LOCK_FACTORIES))
def make_lock(request: pytest.FixtureRequest) -> Callable[[], Any]:
    return LOCK_FACTORIES[request.param]


@pytest.fixture(params=OWNED)
def make_fifo(request: pytest.FixtureRequest) -> Callable[[], Any]:
    return LOCK_FACTORIES[request.param]


def try_from_other_thread(lock: Any, blocking: bool = False, timeout: float = -1) -> bool:
    """The result of ``lock.acquire(blocking, timeout)`` in a fresh thread (released if won)."""
    result: list[bool] = []

    def attempt() -> None:
        got = lock.acquire(blocking, timeout)
        result.append(got)
        if got:
            lock.release()

    join_all([start(attempt, name="test-try")])
    return result[0]


def queue_waiters(lock: Any, count: int, body: Callable[[int], None],
                  first_index: int = 0) -> list[threading.Thread]:
    """Start ``count`` threads running ``body(i)``, each known to be queued before the next.

    ``lock`` must be held by the caller; ``body`` is expected to block in ``lock.acquire``.
    """
    threads = []
    base = queue_depth(lock)
    for n in range(count):
        threads.append(start(body, first_index + n, name=f"test-waiter-{first_index + n}"))
        wait_until(lambda: queue_depth(lock) == base + n + 1, f"waiter {first_index + n} queued")
    return threads


# ---- the contract: every lock kind -----------------------------------------------------------

def test_acquire_release(make_lock: Callable[[], Any]) -> None:
    lock = make_lock()
    assert not lock.locked()
    assert lock.acquire() is True
    assert lock.locked()
    lock.release()
    assert not lock.locked()
    assert lock.acquire(True, 1.0) is True
    lock.release()


def test_nonblocking_acquire_fails_when_held(make_lock: Callable[[], Any]) -> None:
    lock = make_lock()
    assert lock.acquire(False) is True
    assert try_from_other_thread(lock, blocking=False) is False
    assert try_from_other_thread(lock, blocking=True, timeout=0) is False
    lock.release()
    assert try_from_other_thread(lock, blocking=False) is True


def test_timeout_returns_false_within_bounds(make_lock: Callable[[], Any]) -> None:
    lock = make_lock()
    lock.acquire()
    elapsed: list[float] = []
    results: list[bool] = []

    def attempt() -> None:
        t0 = time.monotonic()
        results.append(lock.acquire(True, 0.1))
        elapsed.append(time.monotonic() - t0)

    join_all([start(attempt)])
    lock.release()
    assert results == [False]
    assert 0.09 <= elapsed[0] < 0.1 + 5.0


def test_invalid_timeouts_raise_value_error(make_lock: Callable[[], Any]) -> None:
    lock = make_lock()
    with pytest.raises(ValueError):
        lock.acquire(True, -2)
    with pytest.raises(ValueError):
        lock.acquire(True, -0.5)
    with pytest.raises(ValueError):
        lock.acquire(False, 1.0)
    assert not lock.locked()
    assert lock.acquire(False) is True  # nothing was left behind
    lock.release()


def test_context_manager(make_lock: Callable[[], Any]) -> None:
    lock = make_lock()
    with lock:
        assert lock.locked()
    assert not lock.locked()
    with pytest.raises(KeyError):
        with lock:
            raise KeyError("boom")
    assert not lock.locked()


def test_release_of_unlocked_raises(make_lock: Callable[[], Any]) -> None:
    lock = make_lock()
    with pytest.raises(RuntimeError):
        lock.release()
    lock.acquire()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_mutual_exclusion(make_lock: Callable[[], Any]) -> None:
    lock = make_lock()
    barrier = threading.Barrier(EXCLUSION_THREADS, timeout=WAIT_TIMEOUT_S)
    counter = [0]
    inside = [0]
    overlaps: list[int] = []
    failures: list[str] = []

    def work(_: int) -> None:
        barrier.wait()
        for _ in range(EXCLUSION_CYCLES):
            if not lock.acquire(True, LONG_ACQUIRE_S):
                failures.append("acquire timed out")
                return
            try:
                inside[0] += 1
                if inside[0] != 1:
                    overlaps.append(inside[0])
                value = counter[0]
                time.sleep(0)  # yield the GIL mid-update: without exclusion, updates get lost
                counter[0] = value + 1
                inside[0] -= 1
            finally:
                lock.release()

    join_all([start(work, i, name=f"test-excl-{i}") for i in range(EXCLUSION_THREADS)])
    assert failures == []
    assert overlaps == []
    assert counter[0] == EXCLUSION_THREADS * EXCLUSION_CYCLES


# ---- owner semantics: FIFOMutex and KeyedMutex keys ------------------------------------------

def test_release_by_non_owner_raises(make_fifo: Callable[[], Any]) -> None:
    lock = make_fifo()
    lock.acquire()
    errors: list[BaseException] = []

    def intruder() -> None:
        try:
            lock.release()
        except RuntimeError as exc:
            errors.append(exc)

    join_all([start(intruder)])
    assert len(errors) == 1
    assert lock.locked()
    lock.release()  # the owner still can
    assert not lock.locked()


def test_reacquire_by_owner_raises_instead_of_deadlocking(make_fifo: Callable[[], Any]) -> None:
    lock = make_fifo()
    lock.acquire()
    with pytest.raises(RuntimeError, match="not reentrant"):
        lock.acquire(True, 1.0)
    with pytest.raises(RuntimeError, match="not reentrant"):
        lock.acquire(False)
    lock.release()
    assert not lock.locked()
    assert try_from_other_thread(lock) is True


# ---- FIFO order, hand-off and no barging -----------------------------------------------------

def test_fifo_order_of_forced_arrivals(make_fifo: Callable[[], Any]) -> None:
    """32 waiters, each known to be queued before the next starts, acquire in arrival order.

    Repeated FIFO_ROUNDS (5) times with a fresh lock each round.
    """
    for _ in range(FIFO_ROUNDS):
        lock = make_fifo()
        order: list[int] = []

        def waiter(i: int) -> None:
            assert lock.acquire(True, LONG_ACQUIRE_S)
            order.append(i)
            lock.release()

        lock.acquire()
        threads = queue_waiters(lock, FIFO_THREADS, waiter)
        lock.release()
        join_all(threads)
        assert order == list(range(FIFO_THREADS))
        assert not lock.locked()
        assert queue_depth(lock) == 0


def test_no_barging_while_waiters_are_queued(make_fifo: Callable[[], Any]) -> None:
    lock = make_fifo()
    order: list[int] = []

    def waiter(i: int) -> None:
        assert lock.acquire(True, LONG_ACQUIRE_S)
        order.append(i)
        lock.release()

    lock.acquire()
    threads = queue_waiters(lock, 3, waiter)
    assert try_from_other_thread(lock, blocking=False) is False
    assert try_from_other_thread(lock, blocking=True, timeout=0) is False
    lock.release()
    # Ownership went straight to waiter 0: even the thread that just released cannot barge.
    assert lock.acquire(False) is False
    join_all(threads)
    assert order == [0, 1, 2]


def test_seed_001_single_queued_waiter_is_woken_on_release(make_fifo: Callable[[], Any]) -> None:
    """Regression for seeds/001: a queued waiter re-checked ``locked``, found it still set
    and re-queued itself, so a release with exactly one waiter queued never woke anyone.

    The holder releases while exactly one waiter is queued; the waiter must own the mutex
    within a bounded wait. Repeated SEED_001_ROUNDS (1,000) times.
    """
    lock = make_fifo()
    for round_no in range(SEED_001_ROUNDS):
        results: list[bool] = []

        def waiter(_: int) -> None:
            got = lock.acquire(True, LONG_ACQUIRE_S)
            results.append(got)
            if got:
                lock.release()

        lock.acquire()
        threads = queue_waiters(lock, 1, waiter)
        lock.release()
        join_all(threads)
        assert results == [True], f"round {round_no}: the queued waiter was not woken"
    assert not lock.locked()


def test_no_lost_wakeups(make_fifo: Callable[[], Any]) -> None:
    """20,000 acquire/release cycles over 8 threads; every bounded acquire must succeed."""
    lock = make_fifo()
    barrier = threading.Barrier(LOST_WAKEUP_THREADS, timeout=WAIT_TIMEOUT_S)
    counter = [0]
    failures: list[int] = []
    per_thread = LOST_WAKEUP_CYCLES // LOST_WAKEUP_THREADS

    def work(i: int) -> None:
        barrier.wait()
        for cycle in range(per_thread):
            if not lock.acquire(True, LONG_ACQUIRE_S):
                failures.append(cycle)
                return
            value = counter[0]
            counter[0] = value + 1
            lock.release()

    join_all([start(work, i, name=f"test-wake-{i}") for i in range(LOST_WAKEUP_THREADS)])
    assert failures == []
    assert counter[0] == LOST_WAKEUP_CYCLES
    assert not lock.locked()
    assert queue_depth(lock) == 0


class _YieldingDeque(deque):  # type: ignore[type-arg]
    """A waiter queue that gives up the GIL right after its length is read or a record is
    appended, so every look at the queue (the release's "anyone queued?" included) acts on a
    possibly stale answer, and a waiter's append and its try of the lock are torn apart."""

    def __len__(self) -> int:
        length = super().__len__()
        time.sleep(0)  # others run between the read and its use: the answer may be stale
        return length

    def append(self, item: Any) -> None:
        time.sleep(0)
        super().append(item)
        time.sleep(0)


def test_unlock_racing_an_enqueue_loses_no_wakeup() -> None:
    """The uncontended release frees the mutex without the state lock; a thread that queues
    between its look at the queue and the unlock must still be woken. The queue yields the
    GIL on every look and around every append, so that window is hit many times in 20,000
    cycles over 3 threads: without the release's second look at the queue, or with a waiter
    that tries the lock before it appends its record, a waiter hangs and this test fails
    (both checked). Mutual exclusion is checked with a non-atomic counter on the way."""
    lock = FIFOMutex()
    lock._waiters = _YieldingDeque()
    threads = 3
    per_thread = LOST_WAKEUP_CYCLES // threads
    barrier = threading.Barrier(threads, timeout=WAIT_TIMEOUT_S)
    counter = [0]
    failures: list[int] = []

    def work(i: int) -> None:
        barrier.wait()
        for cycle in range(per_thread):
            # Thread 0 takes the untimed fast path; a hang there is caught by join_all.
            if not (lock.acquire() if i == 0 else lock.acquire(True, 2.0)):
                failures.append(cycle)
                return
            value = counter[0]
            if cycle % 8 == 0:
                time.sleep(0)  # a second owner would interleave here and lose an increment
            counter[0] = value + 1
            lock.release()

    join_all([start(work, i, name=f"test-race-{i}") for i in range(threads)])
    assert failures == []
    assert counter[0] == per_thread * threads
    assert not lock.locked()
    assert lock.stats().queue_depth == 0
    assert lock.stats().contended > 0  # the threads really did queue


# ---- timeouts leave the queue cleanly ----------------------------------------------------------

def test_timed_out_waiter_leaves_queue_and_never_gets_ownership(
        make_fifo: Callable[[], Any]) -> None:
    lock = make_fifo()
    order: list[str] = []
    quitter_result: list[bool] = []

    def live(name: str) -> None:
        assert lock.acquire(True, LONG_ACQUIRE_S)
        order.append(name)
        lock.release()

    def quitter() -> None:
        quitter_result.append(lock.acquire(True, SHORT_TIMEOUT_S))

    lock.acquire()
    first = start(live, "first")
    wait_until(lambda: queue_depth(lock) == 1, "first queued")
    gives_up = start(quitter)
    wait_until(lambda: queue_depth(lock) == 2 or bool(quitter_result), "quitter queued")
    last = start(live, "last")
    wait_until(lambda: len(quitter_result) == 1 and queue_depth(lock) == 2,
               "quitter gone, last queued")
    join_all([gives_up])
    assert quitter_result == [False]
    lock.release()
    join_all([first, last])
    assert order == ["first", "last"]
    assert not lock.locked()
    assert queue_depth(lock) == 0


def test_all_waiters_time_out_and_queue_empties(make_fifo: Callable[[], Any]) -> None:
    lock = make_fifo()
    results: list[bool] = []
    lock.acquire()
    threads = [start(lambda: results.append(lock.acquire(True, SHORT_TIMEOUT_S)))
               for _ in range(4)]
    join_all(threads)
    assert results == [False] * 4
    assert queue_depth(lock) == 0
    lock.release()
    assert not lock.locked()
    assert try_from_other_thread(lock) is True


def test_timeouts_racing_releases_never_leak_ownership() -> None:
    """A waiter's short timeout races the holder's release, 200 times: whatever the outcome,
    the waiter owns the mutex exactly when its acquire returned True, and nothing is left
    queued or held afterwards."""
    lock = FIFOMutex()
    wins = 0
    for _ in range(200):
        outcome: list[bool] = []
        released_by_waiter: list[bool] = []

        def waiter() -> None:
            got = lock.acquire(True, 0.002)
            outcome.append(got)
            if got:
                lock.release()  # raises if the "win" did not make us the owner
                released_by_waiter.append(True)

        lock.acquire()
        thread = start(waiter)
        wait_until(lambda: queue_depth(lock) == 1 or bool(outcome), "waiter queued or done")
        lock.release()
        join_all([thread])
        wins += outcome[0]
        assert released_by_waiter == ([True] if outcome[0] else [])
        assert not lock.locked()
        assert queue_depth(lock) == 0
    stats = lock.stats()
    assert stats.acquisitions == 200 + wins
    assert stats.contended == wins
    assert stats.timeouts == 200 - wins


class _Interrupt(BaseException):
    """Stands for KeyboardInterrupt arriving while a thread is queued."""


def _patch_signal(monkeypatch: pytest.MonkeyPatch,
                  timed_wait: Callable[[Any], bool]) -> None:
    """Make every new waiter's *timed* wait run ``timed_wait(waiter)`` instead of waiting."""

    class FakeSignal:
        def __init__(self, real: Any, waiter: Any) -> None:
            self.real = real
            self.waiter = waiter

        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if timeout == -1:
                return bool(self.real.acquire())
            return timed_wait(self.waiter)

        def release(self) -> None:
            self.real.release()

    class PatchedWaiter(fifo_module._Waiter):
        def __init__(self, ident: int, queued_at: float) -> None:
            super().__init__(ident, queued_at)
            self.signal = FakeSignal(self.signal, self)  # type: ignore[assignment]

    monkeypatch.setattr(fifo_module, "_Waiter", PatchedWaiter)


def test_grant_racing_a_timeout_means_the_waiter_owns_the_mutex(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """White-box: the waiter's wait 'expires' only after release() granted it ownership.
    acquire() must then return True, and the waiter must be the owner."""

    def expire_after_grant(waiter: Any) -> bool:
        wait_until(lambda: waiter.granted, "the grant")
        return False

    _patch_signal(monkeypatch, expire_after_grant)
    lock = FIFOMutex()
    outcome: list[bool] = []

    def waiter() -> None:
        outcome.append(lock.acquire(True, 1.0))
        lock.release()

    lock.acquire()
    thread = start(waiter)
    wait_until(lambda: lock.stats().queue_depth == 1, "waiter queued")
    lock.release()
    join_all([thread])
    assert outcome == [True]
    assert lock.stats()[:3] == (2, 1, 0)  # acquisitions, contended, timeouts
    assert not lock.locked()


@pytest.mark.parametrize("granted_first", [False, True], ids=["queued", "granted"])
def test_interrupted_waiter_leaves_queue_and_passes_ownership_on(
        monkeypatch: pytest.MonkeyPatch, granted_first: bool) -> None:
    """White-box: an exception escaping the wait removes the record; if ownership had already
    been granted, it goes on to the next waiter instead of being lost."""
    ready = threading.Event()

    def interrupt(waiter: Any) -> bool:
        if granted_first:
            ready.set()
            wait_until(lambda: waiter.granted, "the grant")
        raise _Interrupt

    _patch_signal(monkeypatch, interrupt)
    lock = FIFOMutex()
    interrupted: list[bool] = []
    next_owner: list[bool] = []

    def victim() -> None:
        try:
            lock.acquire(True, 1.0)
        except _Interrupt:
            interrupted.append(True)

    def follower() -> None:
        next_owner.append(lock.acquire())  # untimed: uses the real signal
        lock.release()

    lock.acquire()
    first = start(victim)
    if granted_first:
        assert ready.wait(WAIT_TIMEOUT_S)
        second = start(follower)
        wait_until(lambda: lock.stats().queue_depth == 2, "follower queued")
        lock.release()
    else:
        join_all([first])
        assert lock.stats().queue_depth == 0
        second = start(follower)
        wait_until(lambda: lock.stats().queue_depth == 1, "follower queued")
        lock.release()
    join_all([first, second])
    assert interrupted == [True]
    assert next_owner == [True]
    assert not lock.locked()
    assert lock.stats().queue_depth == 0


# ---- statistics ------------------------------------------------------------------------------

def test_stats_uncontended() -> None:
    lock = FIFOMutex()
    no_waits = (0,) * (len(WAIT_BUCKETS_S) + 1)
    assert lock.stats() == MutexStats(0, 0, 0, 0.0, 0.0, 0, no_waits)
    for _ in range(3):
        with lock:
            pass
    assert lock.acquire(False)
    assert try_from_other_thread(lock, blocking=False) is False  # a failed try is no timeout
    lock.release()
    assert lock.stats() == MutexStats(acquisitions=4, contended=0, timeouts=0,
                                      total_wait_s=0.0, max_wait_s=0.0, queue_depth=0,
                                      wait_buckets=no_waits)


def test_stats_contended_and_timeouts() -> None:
    lock = FIFOMutex()
    lock.acquire()
    results: list[bool] = []

    def waiter(_: int) -> None:
        got = lock.acquire(True, LONG_ACQUIRE_S)
        results.append(got)
        if got:
            lock.release()

    threads = queue_waiters(lock, 2, waiter)
    assert lock.stats().queue_depth == 2
    assert try_from_other_thread(lock, blocking=True, timeout=SHORT_TIMEOUT_S) is False
    lock.release()
    join_all(threads)
    stats = lock.stats()
    assert results == [True, True]
    assert stats.acquisitions == 3
    assert stats.contended == 2
    assert stats.timeouts == 1
    assert stats.queue_depth == 0
    # Both waiters queued before the timed-out attempt, which took >= SHORT_TIMEOUT_S.
    assert stats.max_wait_s >= SHORT_TIMEOUT_S * 0.9
    assert stats.max_wait_s <= stats.total_wait_s <= 2 * stats.max_wait_s


def test_fifo_wait_histogram_counts_contended_waits() -> None:
    """Every contended acquisition lands in exactly one wait bucket."""
    m = FIFOMutex()
    m.acquire()
    queued = threading.Event()
    got = threading.Event()

    def waiter() -> None:
        queued.set()
        with m:
            got.set()

    t = threading.Thread(target=waiter)
    t.start()
    assert queued.wait(10)
    deadline = time.monotonic() + 10
    while m.stats().queue_depth != 1:  # observe the waiter queued (bounded)
        assert time.monotonic() < deadline
    m.release()
    assert got.wait(10)
    t.join(10)
    st = m.stats()
    assert len(st.wait_buckets) == len(WAIT_BUCKETS_S) + 1
    assert sum(st.wait_buckets) == st.contended == 1
