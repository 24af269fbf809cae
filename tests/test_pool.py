"""``mcpsync.frontend.pool.WorkerPool``: slots, arrival order, parking in user code.

Tasks synchronize with events and barriers; every wait is bounded. Order is made known by
queueing each task only after the previous one is visibly queued (``stats().queued``).
"""
from __future__ import annotations

import re
import threading
import time
from typing import Any, Callable, Iterator

import pytest
from rpcutil import wait_until

from mcpsync.frontend import pool as pool_module
from mcpsync.frontend.pool import WorkerPool, start_daemon_thread
from mcpsync.sync.blocking import current_hook, may_block

WAIT_S = 10.0


@pytest.fixture
def make_pool() -> Iterator[Callable[..., WorkerPool]]:
    pools: list[WorkerPool] = []

    def make(slots: int = 1, max_threads: int = 8, **kwargs: Any) -> WorkerPool:
        pool = WorkerPool(slots, max_threads, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        assert pool.shutdown(WAIT_S)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("mcpsync-worker")]


def awake(pool: WorkerPool) -> WorkerPool:
    """The pool as the front end runs it: a reclaimer (the dispatcher), awake."""
    pool.attach_reclaimer()
    pool.reclaimer_awake = True
    return pool


def blocker() -> tuple[threading.Event, threading.Event, Callable[[Any], None]]:
    """A task that says it started, then waits (holding its slot) until released."""
    started, release = threading.Event(), threading.Event()

    def task(_: Any) -> None:
        started.set()
        assert release.wait(WAIT_S)

    return started, release, task


def test_tasks_start_in_submission_order(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(slots=1)
    started, release, task = blocker()
    pool.submit(task)
    assert started.wait(WAIT_S)
    order: list[int] = []
    done = threading.Event()
    for i in range(16):
        pool.submit(lambda i: (order.append(i), i == 15 and done.set()), i)
    assert pool.stats().queued == 16
    release.set()
    assert done.wait(WAIT_S)
    assert order == list(range(16))
    assert wait_until(lambda: pool.stats().busy_slots == 0, WAIT_S)
    st = pool.stats()
    assert (st.started, st.waited, st.queued) == (17, 16, 0)


def test_slots_bound_how_many_run_at_once(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(slots=3, max_threads=12)
    inside = threading.Barrier(4, timeout=WAIT_S)  # three tasks and the test
    go = threading.Event()
    ran: list[int] = []

    def task(i: int) -> None:
        if i < 3:
            inside.wait()
            assert go.wait(WAIT_S)
        ran.append(i)

    for i in range(10):
        pool.submit(task, i)
    inside.wait()  # three run together ...
    assert pool.stats().queued == 7 and ran == []  # ... and the other seven wait
    go.set()
    assert wait_until(lambda: len(ran) == 10, WAIT_S)
    assert pool.stats().threads <= 3


def test_a_parked_worker_gives_its_slot_to_the_next_task(
        make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(slots=1)
    parked, release = threading.Event(), threading.Event()
    order: list[str] = []

    def blocking_tool(_: Any) -> None:
        with may_block():
            parked.set()
            assert release.wait(WAIT_S)
        order.append("tool resumed")

    pool.submit(blocking_tool)
    assert parked.wait(WAIT_S)
    other = threading.Event()
    pool.submit(lambda _: (order.append("other"), other.set()))
    assert other.wait(WAIT_S)  # ran while the first held no slot
    release.set()
    assert wait_until(lambda: order == ["other", "tool resumed"], WAIT_S)
    assert pool.stats().threads == 2


def test_a_resuming_request_goes_before_later_arrivals(
        make_pool: Callable[..., WorkerPool]) -> None:
    """A parks; B takes the slot; C arrives (queued); A's user code returns and queues for
    a slot; B ends: A, the older request, resumes before C starts (arrival order)."""
    pool = make_pool(slots=1)
    order: list[str] = []
    a_parked, a_release = threading.Event(), threading.Event()
    b_started, b_release = threading.Event(), threading.Event()

    def a(_: Any) -> None:
        with may_block():
            a_parked.set()
            assert a_release.wait(WAIT_S)
        order.append("A")

    def b(_: Any) -> None:
        b_started.set()
        assert b_release.wait(WAIT_S)
        order.append("B")

    pool.submit(a)
    assert a_parked.wait(WAIT_S)
    pool.submit(b)
    assert b_started.wait(WAIT_S)
    pool.submit(lambda _: order.append("C"))
    assert pool.stats().queued == 1
    a_release.set()
    assert wait_until(lambda: pool.stats().resuming == 1, WAIT_S)
    b_release.set()
    assert wait_until(lambda: len(order) == 3, WAIT_S)
    assert order == ["B", "A", "C"]


def test_nested_may_block_acts_once(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(slots=1)
    seen: list[tuple[int, int]] = []
    done = threading.Event()

    def snapshot() -> tuple[int, int]:
        st = pool.stats()
        return st.parked, st.busy_slots

    def task(_: Any) -> None:
        with may_block():
            seen.append(snapshot())
            with may_block():
                seen.append(snapshot())
            seen.append(snapshot())  # still parked: the outer block holds
        seen.append(snapshot())
        done.set()

    pool.submit(task)
    assert done.wait(WAIT_S)
    # parked (nobody waits, so it keeps its slot), once; then back to plain holding
    assert seen == [(1, 1), (1, 1), (1, 1), (0, 1)]


def test_threads_are_bounded_and_tasks_wait_for_one(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(slots=1, max_threads=3)
    release = threading.Event()
    parked = threading.Semaphore(0)
    finished: list[int] = []

    def tool(i: int) -> None:
        with may_block():
            parked.release()
            assert release.wait(WAIT_S)
        finished.append(i)

    for i in range(5):
        pool.submit(tool, i)
    for _ in range(3):
        assert parked.acquire(timeout=WAIT_S)
    st = pool.stats()
    # no thread for the two queued tasks: the last one parked keeps its slot (of no use)
    assert (st.threads, st.queued, st.parked) == (3, 2, 1)
    release.set()
    assert wait_until(lambda: len(finished) == 5, WAIT_S)
    assert sorted(finished) == [0, 1, 2, 3, 4] and pool.stats().threads <= 3


def test_leave_slot_for_the_rest_of_a_task(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(slots=1)
    streaming, release = threading.Event(), threading.Event()

    def stream(_: Any) -> None:
        pool.leave_slot()
        pool.leave_slot()  # twice is harmless
        with may_block():  # holding nothing: nothing to give up or take back
            pass
        streaming.set()
        assert release.wait(WAIT_S)

    pool.submit(stream)
    assert streaming.wait(WAIT_S)
    assert pool.stats().busy_slots == 0
    other = threading.Event()
    pool.submit(lambda _: other.set())
    assert other.wait(WAIT_S)
    release.set()
    pool.leave_slot()  # not a worker: no-op


def test_a_parked_worker_runs_without_a_slot_after_the_bound(
        make_pool: Callable[..., WorkerPool], monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net: the slot holder blocks in a wait nobody marked; the parked worker
    gives up waiting for its slot back after RESUME_MAX_WAIT_S and runs on."""
    monkeypatch.setattr(pool_module, "RESUME_MAX_WAIT_S", 0.05)
    pool = make_pool(slots=1)
    parked, back = threading.Event(), threading.Event()
    hog_started, hog_release = threading.Event(), threading.Event()

    def tool(_: Any) -> None:
        with may_block():
            parked.set()
            assert hog_started.wait(WAIT_S)
        back.set()

    def hog(_: Any) -> None:
        hog_started.set()
        assert hog_release.wait(WAIT_S)  # unmarked: keeps the slot

    pool.submit(tool)
    assert parked.wait(WAIT_S)
    pool.submit(hog)
    assert back.wait(WAIT_S)
    assert pool.stats().overdrafts == 1
    hog_release.set()


def test_cancel_a_queued_task(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(slots=1)
    started, release, task = blocker()
    first = pool.submit(task)
    assert started.wait(WAIT_S)
    ran: list[str] = []
    second = pool.submit(lambda _: ran.append("second"))
    third_done = threading.Event()
    pool.submit(lambda _: third_done.set())
    assert pool.cancel(second) is True
    assert pool.cancel(second) is False
    assert pool.cancel(first) is False  # already running
    assert pool.stats().queued == 1
    release.set()
    assert third_done.wait(WAIT_S)
    assert ran == []


def test_expire_withdraws_the_oldest_queued_tasks(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(slots=1)
    started, release, task = blocker()
    pool.submit(task, "running")
    assert started.wait(WAIT_S)
    ran: list[str] = []
    pool.submit(lambda a: ran.append(a), "old")
    cancelled = pool.submit(lambda a: ran.append(a), "cancelled")
    pool.cancel(cancelled)
    cutoff = time.monotonic()
    assert wait_until(lambda: time.monotonic() > cutoff, WAIT_S)
    last = threading.Event()
    pool.submit(lambda a: (ran.append(a), last.set()), "new")
    assert pool.expire(cutoff) == ["old"] and pool.queued == 1
    release.set()
    assert last.wait(WAIT_S)
    assert ran == ["new"]


def test_failed_thread_start_keeps_the_task_queued(
        make_pool: Callable[..., WorkerPool], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "SPAWN_BACKOFF_S", 0.0)
    names: list[str] = []
    refuse = [True]

    def start_thread(target: Callable[[], None], name: str) -> Any:
        if refuse[0]:
            refuse[0] = False
            raise RuntimeError("can't start new thread")
        names.append(name)
        return start_daemon_thread(target, name)

    pool = make_pool(slots=2, start_thread=start_thread)
    done = threading.Event()
    pool.submit(lambda _: done.set())  # the first start fails, the retry runs it
    assert done.wait(WAIT_S)
    st = pool.stats()
    assert st.spawn_failures == 1 and st.started == 1
    assert all(re.fullmatch(r"mcpsync-worker-\d+", n) for n in names)


def test_failed_thread_start_backs_off(make_pool: Callable[..., WorkerPool]) -> None:
    def start_thread(target: Callable[[], None], name: str) -> Any:
        raise RuntimeError("can't start new thread")

    pool = make_pool(slots=2, start_thread=start_thread)
    pool.submit(lambda _: None)
    pool.submit(lambda _: None)  # within the back-off: not even tried
    st = pool.stats()
    assert (st.spawn_failures, st.queued, st.threads, st.busy_slots) == (1, 2, 0, 0)


def test_a_failing_task_keeps_its_thread(make_pool: Callable[..., WorkerPool],
                                         caplog: pytest.LogCaptureFixture) -> None:
    pool = make_pool(slots=1)
    pool.submit(lambda _: 1 / 0)
    done = threading.Event()
    pool.submit(lambda _: done.set())
    assert done.wait(WAIT_S)
    assert pool.stats().threads == 1
    assert any("worker task failed" in r.getMessage() for r in caplog.records)


def test_extra_idle_threads_exit(make_pool: Callable[..., WorkerPool],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "IDLE_THREAD_S", 0.05)
    pool = make_pool(slots=1, max_threads=4)
    release = threading.Event()
    parked = threading.Semaphore(0)

    def tool(_: Any) -> None:
        with may_block():
            parked.release()
            assert release.wait(WAIT_S)

    for _ in range(4):
        pool.submit(tool)
    for _ in range(4):
        assert parked.acquire(timeout=WAIT_S)
    assert pool.stats().threads == 4
    release.set()
    assert wait_until(lambda: pool.stats().threads == 1, WAIT_S)


def test_the_hook_is_installed_on_workers_only(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(slots=1)
    seen: list[Any] = []
    done = threading.Event()
    pool.submit(lambda _: (seen.append(current_hook()), done.set()))
    assert done.wait(WAIT_S)
    assert seen[0] is not None and current_hook() is None
    with may_block():  # on a thread without a hook: a no-op
        pass


def test_shutdown_waits_for_running_tasks_and_refuses_new_ones(
        make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(slots=1)
    started, release, task = blocker()
    pool.submit(task)
    assert started.wait(WAIT_S)
    dropped: list[str] = []
    pool.submit(lambda _: dropped.append("queued"))
    assert pool.shutdown(0.05) is False  # the running one is still running
    with pytest.raises(RuntimeError):
        pool.submit(lambda _: None)
    release.set()
    assert pool.shutdown(WAIT_S) is True
    assert dropped == []
    with pytest.raises(ValueError):
        pool.shutdown(-1)


def test_pool_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        WorkerPool(0, 4)
    with pytest.raises(ValueError):
        WorkerPool(4, 2)


def test_prestart_keeps_slots_threads_ready(make_pool: Callable[..., WorkerPool]) -> None:
    pool = make_pool(slots=3, max_threads=6)
    pool.prestart()
    st = pool.stats()
    assert (st.threads, st.idle_threads) == (3, 3)
    done = threading.Semaphore(0)
    for _ in range(9):
        pool.submit(lambda _: done.release())
    for _ in range(9):
        assert done.acquire(timeout=WAIT_S)
    assert pool.stats().threads == 3  # served by the threads already there


def test_a_short_wait_keeps_its_slot_until_the_grace_is_up(
        make_pool: Callable[..., WorkerPool], monkeypatch: pytest.MonkeyPatch) -> None:
    """With a reclaimer (the dispatcher) awake, a worker entering may_block() keeps its slot:
    a task that arrives meanwhile waits until the worker has been parked PARK_GRACE_S and
    the reclaimer takes the slot, or until the worker comes back (no switch at all)."""
    monkeypatch.setattr(pool_module, "PARK_GRACE_S", 60.0)  # only reclaim() at a time we pick
    pool = awake(make_pool(slots=1))
    parked, release = threading.Event(), threading.Event()

    def tool(_: Any) -> None:
        with may_block():
            parked.set()
            assert release.wait(WAIT_S)

    pool.submit(tool)
    assert parked.wait(WAIT_S)
    ran = threading.Event()
    pool.submit(lambda _: ran.set())
    st = pool.stats()
    assert (st.parked, st.queued, st.busy_slots) == (1, 1, 1)  # the slot was kept
    due = pool.reclaim(time.monotonic())
    assert due is not None and not ran.is_set()  # not yet: the grace is not up
    assert pool.reclaim(due) is None  # now it is: the slot goes to the waiting task
    assert ran.wait(WAIT_S) and pool.stats().steals == 1
    release.set()
    assert wait_until(lambda: pool.stats().busy_slots == 0, WAIT_S)


def test_a_wait_that_ends_within_the_grace_costs_no_hand_over(
        make_pool: Callable[..., WorkerPool]) -> None:
    """A task waits for the only slot while the holder runs 100 short may_block() blocks:
    the holder keeps its slot through all of them (had it handed the slot over at the
    first, it could not have gone on before the waiting task ended)."""
    pool = awake(make_pool(slots=1))
    go = threading.Event()
    order: list[str] = []

    def quick_tool(_: Any) -> None:
        assert go.wait(WAIT_S)
        for _ in range(100):
            with may_block():
                pass
        order.append("tool")

    pool.submit(quick_tool)
    pool.submit(lambda _: order.append("task"))
    assert wait_until(lambda: pool.stats().queued == 1, WAIT_S)
    go.set()
    assert wait_until(lambda: len(order) == 2, WAIT_S)
    assert order == ["tool", "task"] and pool.stats().steals == 0


def test_without_an_awake_reclaimer_a_waiter_takes_the_slot_at_once(
        make_pool: Callable[..., WorkerPool]) -> None:
    """The reclaimer asleep: a worker that parks while a task waits gives its slot up at
    once (nobody would come back for it in time)."""
    pool = make_pool(slots=1)
    pool.attach_reclaimer()
    hog_started, hog_release = threading.Event(), threading.Event()
    parked, release = threading.Event(), threading.Event()

    def first(_: Any) -> None:
        hog_started.set()
        assert hog_release.wait(WAIT_S)
        with may_block():
            parked.set()
            assert release.wait(WAIT_S)

    pool.submit(first)
    assert hog_started.wait(WAIT_S)
    ran = threading.Event()
    pool.submit(lambda _: ran.set())  # queued behind the holder
    hog_release.set()
    assert ran.wait(WAIT_S)  # the holder parked with a waiter and no reclaimer awake
    release.set()


def test_code_that_blocked_long_last_time_hands_its_slot_on_at_once(
        make_pool: Callable[..., WorkerPool], monkeypatch: pytest.MonkeyPatch) -> None:
    """may_block(key) remembers: the first block of ``slow`` outlasts the grace, so its
    second one gives the slot up on entry, with no reclaim() (the reclaimer stays
    "awake" but never comes)."""
    monkeypatch.setattr(pool_module, "PARK_GRACE_S", 0.01)
    pool = awake(make_pool(slots=1))
    slow = object()
    first_done = threading.Event()
    long_enough = threading.Event()  # never set: a bounded wait longer than the grace

    def first(_: Any) -> None:
        with may_block(slow):
            long_enough.wait(0.05)
        first_done.set()

    pool.submit(first)
    assert first_done.wait(WAIT_S)
    parked, release = threading.Event(), threading.Event()

    def second(_: Any) -> None:
        with may_block(slow):
            parked.set()
            assert release.wait(WAIT_S)

    pool.submit(second)
    assert parked.wait(WAIT_S)
    ran = threading.Event()
    pool.submit(lambda _: ran.set())
    assert ran.wait(WAIT_S)  # the slot was free: no grace, no reclaim
    assert pool.stats().steals == 0
    release.set()
