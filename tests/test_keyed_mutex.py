"""KeyedMutex: keys are isolated, each key is exclusive, and the map forgets unused keys.

The per-key lock contract (FIFO order, timeouts, no barging, seed-001) is exercised through
``KeyLock`` in test_sync_contract.py; this file covers what is specific to the key map.
Every wait is bounded; threads are synchronized with events and barriers, never sleeps.
"""
from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, Hashable, Iterable

import pytest

from mcpsync.errors import MutexTimeout
from mcpsync.sync import KeyedMutex

JOIN_TIMEOUT_S = 20.0  # upper bound for any helper thread to finish
WAIT_TIMEOUT_S = 10.0  # upper bound for an event or observable condition
LONG_ACQUIRE_S = 10.0  # timeout for acquires that must succeed (bounded, never hit)
SHORT_TIMEOUT_S = 0.05  # timeout for acquires that must fail

DISTINCT_KEYS = 100_000
DISTINCT_KEY_THREADS = 4
HAMMER_THREADS = 16
HAMMER_KEYS = 1_000
HAMMER_OPS_PER_THREAD = 1_500
HAMMER_HOT_KEYS = 8  # half the operations go to these, so keys really are contended


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


def refs(keyed: KeyedMutex[Any], key: Hashable) -> int:
    """Threads holding or waiting for ``key`` (white-box: reads the entry under the map lock)."""
    with keyed._lock:
        entry = keyed._entries.get(key)
        return 0 if entry is None else entry.refs


class Holder:
    """A thread that holds one key until told to let go."""

    def __init__(self, keyed: KeyedMutex[Any], key: Hashable) -> None:
        self.holding = threading.Event()
        self.let_go = threading.Event()
        self.thread = start(self._run, keyed, key, name=f"test-holder-{key}")
        assert self.holding.wait(WAIT_TIMEOUT_S)

    def _run(self, keyed: KeyedMutex[Any], key: Hashable) -> None:
        with keyed.hold(key, timeout=LONG_ACQUIRE_S):
            self.holding.set()
            assert self.let_go.wait(WAIT_TIMEOUT_S)

    def stop(self) -> None:
        self.let_go.set()
        join_all([self.thread])


def test_different_keys_do_not_block_each_other() -> None:
    keyed: KeyedMutex[str] = KeyedMutex()
    holder = Holder(keyed, "a")
    t0 = time.monotonic()
    with keyed.hold("b", timeout=LONG_ACQUIRE_S):
        assert time.monotonic() - t0 < LONG_ACQUIRE_S
        assert len(keyed) == 2
        assert keyed.locked("a") and keyed.locked("b")
    assert keyed.acquire("c", timeout=0) is True  # a try on a free key succeeds at once
    keyed.release("c")
    holder.stop()
    assert len(keyed) == 0
    assert not keyed.locked("a")


def test_a_held_key_blocks_the_same_key() -> None:
    keyed: KeyedMutex[str] = KeyedMutex()
    holder = Holder(keyed, "a")
    assert keyed.acquire("a", timeout=0) is False
    assert keyed.acquire("a", timeout=SHORT_TIMEOUT_S) is False
    with pytest.raises(MutexTimeout):
        with keyed.hold("a", timeout=SHORT_TIMEOUT_S):
            pytest.fail("entered a key another thread holds")
    assert refs(keyed, "a") == 1  # the failed attempts counted themselves out
    holder.stop()
    assert len(keyed) == 0


def test_mutual_exclusion_within_a_key() -> None:
    keyed: KeyedMutex[str] = KeyedMutex()
    threads_n, cycles = 8, 500
    barrier = threading.Barrier(threads_n, timeout=WAIT_TIMEOUT_S)
    counter = [0]
    inside = [0]
    overlaps: list[int] = []

    def work(_: int) -> None:
        barrier.wait()
        for _ in range(cycles):
            with keyed.hold("shared", timeout=LONG_ACQUIRE_S):
                inside[0] += 1
                if inside[0] != 1:
                    overlaps.append(inside[0])
                value = counter[0]
                time.sleep(0)  # yield the GIL mid-update: without exclusion, updates get lost
                counter[0] = value + 1
                inside[0] -= 1

    join_all([start(work, i, name=f"test-excl-{i}") for i in range(threads_n)])
    assert overlaps == []
    assert counter[0] == threads_n * cycles
    assert len(keyed) == 0


def test_map_empties_after_100000_distinct_keys() -> None:
    keyed: KeyedMutex[tuple[int, int]] = KeyedMutex()
    barrier = threading.Barrier(DISTINCT_KEY_THREADS, timeout=WAIT_TIMEOUT_S)
    most_seen = [0]
    per_thread = DISTINCT_KEYS // DISTINCT_KEY_THREADS

    def work(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            with keyed.hold((t, i), timeout=LONG_ACQUIRE_S):
                if i % 1000 == 0:
                    most_seen[0] = max(most_seen[0], len(keyed))

    join_all([start(work, t, name=f"test-distinct-{t}") for t in range(DISTINCT_KEY_THREADS)])
    assert 1 <= most_seen[0] <= DISTINCT_KEY_THREADS
    assert len(keyed) == 0
    assert keyed._entries == {}


def test_timed_out_waiters_free_their_entries() -> None:
    keyed: KeyedMutex[str] = KeyedMutex()
    holder = Holder(keyed, "a")
    outcomes: list[str] = []

    def waiter() -> None:
        try:
            with keyed.hold("a", timeout=SHORT_TIMEOUT_S):
                outcomes.append("entered")
        except MutexTimeout:
            outcomes.append("timeout")

    join_all([start(waiter, name=f"test-waiter-{i}") for i in range(4)])
    assert outcomes == ["timeout"] * 4
    assert refs(keyed, "a") == 1
    assert len(keyed) == 1
    holder.stop()
    assert len(keyed) == 0
    assert keyed._entries == {}


def wait_for_refs(keyed: KeyedMutex[Any], key: Hashable, n: int) -> None:
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while refs(keyed, key) != n:
        assert time.monotonic() < deadline, f"refs({key!r}) never reached {n}"
        time.sleep(0)  # a yield while polling an observable predicate, not a timed wait


def test_timeout_between_live_waiters_keeps_counts_right() -> None:
    # holder, then a live waiter, then one that times out: the quitter counts itself out,
    # the live waiter still gets the key, and the entry goes once the live waiter is done.
    keyed: KeyedMutex[str] = KeyedMutex()
    holder = Holder(keyed, "a")
    live_got: list[bool] = []
    quitter_got: list[bool] = []

    def live() -> None:
        got = keyed.acquire("a", timeout=LONG_ACQUIRE_S)
        live_got.append(got)
        if got:
            keyed.release("a")

    live_thread = start(live, name="test-live")
    wait_for_refs(keyed, "a", 2)
    quitter = start(lambda: quitter_got.append(keyed.acquire("a", timeout=SHORT_TIMEOUT_S)),
                    name="test-quitter")
    join_all([quitter])
    assert quitter_got == [False]
    assert refs(keyed, "a") == 2
    holder.stop()
    join_all([live_thread])
    assert live_got == [True]
    assert len(keyed) == 0
    assert keyed._entries == {}


def test_misuse_raises_and_changes_nothing() -> None:
    keyed: KeyedMutex[str] = KeyedMutex()
    with pytest.raises(RuntimeError):
        keyed.release("nobody")
    with pytest.raises(ValueError):
        keyed.acquire("a", timeout=-1.5)
    assert len(keyed) == 0
    holder = Holder(keyed, "a")
    with pytest.raises(RuntimeError):
        keyed.release("a")  # held by another thread
    assert refs(keyed, "a") == 1
    holder.stop()
    with keyed.hold("b"):
        with pytest.raises(RuntimeError, match="not reentrant"):
            keyed.acquire("b", timeout=1.0)
        assert refs(keyed, "b") == 1
    assert len(keyed) == 0


def test_hammer_16_threads_1000_keys() -> None:
    keyed: KeyedMutex[int] = KeyedMutex()
    counts = [0] * HAMMER_KEYS
    expected = [0] * HAMMER_KEYS
    expected_lock = threading.Lock()  # guards expected; taken once by each worker at its end
    barrier = threading.Barrier(HAMMER_THREADS, timeout=WAIT_TIMEOUT_S)
    most_seen = [0]

    def work(t: int) -> None:
        rng = random.Random(t)
        mine = [0] * HAMMER_KEYS
        barrier.wait()
        for op in range(HAMMER_OPS_PER_THREAD):
            if rng.random() < 0.5:
                key = rng.randrange(HAMMER_HOT_KEYS)
            else:
                key = rng.randrange(HAMMER_KEYS)
            with keyed.hold(key, timeout=LONG_ACQUIRE_S):
                value = counts[key]
                if op % 4 == 0:
                    time.sleep(0)  # yield the GIL mid-update on some ops to invite races
                counts[key] = value + 1
                if op % 100 == 0:
                    most_seen[0] = max(most_seen[0], len(keyed))
            mine[key] += 1
        with expected_lock:
            for key, n in enumerate(mine):
                expected[key] += n

    join_all([start(work, t, name=f"test-hammer-{t}") for t in range(HAMMER_THREADS)])
    assert counts == expected
    assert sum(counts) == HAMMER_THREADS * HAMMER_OPS_PER_THREAD
    assert 1 <= most_seen[0] <= HAMMER_THREADS
    assert len(keyed) == 0
    assert keyed._entries == {}
