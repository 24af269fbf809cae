"""The Redis state backend against a real redis-server (Debian's, installed on first use by
``sysdeps``; started here on an ephemeral port): the ``TaskStore`` contract run on the
memory and the Redis store alike, announcements between two instances in write order,
leases (renewed while the owner lives, the task failed once it stops), the shared key,
Redis out of reach or killed and restarted, and no Redis command on a plain tool call."""
from __future__ import annotations

import pathlib
import threading
import time
import uuid
from typing import Any, Callable, Iterator

import pytest
import services

from mcpsync import Server
from mcpsync.state import SharedState, StateUnavailable
from mcpsync.state.redis_backend import RedisBackend
from mcpsync.state.redis_tasks import LOST_ERROR
from mcpsync.tasks.store import MemoryTaskStore, TaskLimitError, TaskRecord, TaskStore, new_record

pytest.importorskip("redis")

WAIT_S = 10.0
LEASE_S = 0.6


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.RedisServer]:
    with services.redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


def backend(redis: services.RedisServer, prefix: str, **params: Any) -> RedisBackend:
    return RedisBackend(redis.url(prefix=prefix, **params))


def record(task_id: str, principal: str | None = "alice", ttl_ms: int = 60_000, now: float | None = None) -> TaskRecord:
    return new_record(task_id, principal, now=time.time() if now is None else now, ttl_ms=ttl_ms,
                      poll_interval_ms=100, owner="test", tool="t")


def wait_until(pred: Callable[[], Any], what: str) -> Any:
    return services.wait_until(pred, what, WAIT_S)


class Seen:
    """A store watcher that collects records (condition notified per record)."""

    def __init__(self, store: TaskStore) -> None:
        self.cond = threading.Condition()  # guards `records`
        self.records: list[TaskRecord] = []
        store.watch(self._add)

    def _add(self, rec: TaskRecord) -> None:
        with self.cond:
            self.records.append(rec)
            self.cond.notify_all()

    def wait(self, pred: Callable[[TaskRecord], bool]) -> TaskRecord:
        deadline = time.monotonic() + WAIT_S
        with self.cond:
            while True:
                for rec in self.records:
                    if pred(rec):
                        return rec
                left = deadline - time.monotonic()
                assert left > 0, self.records
                self.cond.wait(left)


# ---- the TaskStore contract, on both stores ---------------------------------------------------------

@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest, redis: services.RedisServer) -> Iterator[TaskStore]:
    if request.param == "memory":
        yield MemoryTaskStore()
        return
    b = backend(redis, f"t{uuid.uuid4().hex[:8]}")
    try:
        yield b.task_store("i1")
    finally:
        b.close()


def test_create_get_and_duplicates(store: TaskStore) -> None:
    rec = record("t1")
    store.create(rec, max_per_principal=10, max_total=10)
    assert store.get("t1") == rec and store.get("nope") is None
    with pytest.raises(ValueError):
        store.create(rec, max_per_principal=10, max_total=10)


def test_replace_is_compare_and_set_on_the_revision(store: TaskStore) -> None:
    store.create(record("t1"), max_per_principal=10, max_total=10)
    current = store.get("t1")
    assert current is not None
    assert store.replace({**current, "status": "input_required"}, expected_revision=0)
    assert not store.replace({**current, "status": "completed"}, expected_revision=0)  # stale
    now = store.get("t1")
    assert now is not None and now["revision"] == 1 and now["status"] == "input_required"
    assert not store.replace({**record("ghost")}, expected_revision=0)


def test_limits_per_principal_and_in_total_and_a_finished_task_frees_its_slot(store: TaskStore) -> None:
    for n in range(2):
        store.create(record(f"a{n}"), max_per_principal=2, max_total=4)
    with pytest.raises(TaskLimitError) as info:
        store.create(record("a2"), max_per_principal=2, max_total=4)
    assert info.value.data["scope"] == "principal"
    store.create(record("b0", principal="bob"), max_per_principal=2, max_total=4)
    done = store.get("a0")
    assert done is not None and store.replace({**done, "status": "completed"}, expected_revision=0)
    store.create(record("a2"), max_per_principal=2, max_total=4)
    with pytest.raises(TaskLimitError) as info:
        store.create(record("b1", principal="bob"), max_per_principal=2, max_total=4)
    assert info.value.data["scope"] == "server"


def test_delete_expired_and_watch(store: TaskStore) -> None:
    seen = Seen(store)
    now = time.time()
    store.create(record("old", ttl_ms=1000, now=now - 10), max_per_principal=5, max_total=5)
    store.create(record("new", now=now), max_per_principal=5, max_total=5)
    assert store.expired(now) == ["old"]
    assert store.delete("old") and not store.delete("old") and store.get("old") is None
    current = store.get("new")
    assert current is not None
    store.replace({**current, "status": "completed"}, expected_revision=0)
    assert [(r["taskId"], r["revision"]) for r in seen.records] == [("old", 0), ("new", 0), ("new", 1)]


# ---- two instances on one Redis --------------------------------------------------------------------

@pytest.fixture
def two(redis: services.RedisServer) -> Iterator[tuple[RedisBackend, RedisBackend]]:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    a, b = backend(redis, prefix, task_lease_s=LEASE_S), backend(redis, prefix, task_lease_s=LEASE_S)
    a.task_store("A")
    b.task_store("B")
    a.start()
    b.start()
    wait_until(lambda: a.healthy() and b.healthy(), "both subscribed")
    yield a, b
    a.close()
    b.close()


def test_writes_are_announced_on_the_other_instance_in_revision_order(two: Any) -> None:
    a, b = two
    store_a, store_b = a.task_store("A"), b.task_store("B")
    seen_a, seen_b = Seen(store_a), Seen(store_b)
    store_a.create(record("t1"), max_per_principal=5, max_total=5)
    seen_b.wait(lambda r: r["taskId"] == "t1")
    for rev in range(20):
        cur = store_b.get("t1")
        assert cur is not None and store_b.replace({**cur, "statusMessage": str(rev)}, expected_revision=rev)
    seen_a.wait(lambda r: r["revision"] == 20)
    revisions = [r["revision"] for r in seen_a.records]
    assert revisions == sorted(revisions) and len(revisions) == len(set(revisions))  # in order, once each
    assert [r["revision"] for r in seen_b.records] == list(range(21))  # own writes announced once


CAS_ROUNDS = 200


def test_racing_writers_on_two_instances_have_exactly_one_winner_per_revision(two: Any) -> None:
    a, b = two
    stores = [a.task_store("A"), b.task_store("B")]
    stores[0].create(record("race"), max_per_principal=5, max_total=5)
    barrier = threading.Barrier(2, timeout=WAIT_S)
    wins = [0, 0]

    def writer(n: int) -> None:
        for rev in range(CAS_ROUNDS):
            current = stores[n].get("race")
            assert current is not None
            barrier.wait()  # both read the same revision, then both write it
            if stores[n].replace({**current, "statusMessage": f"{n}"}, expected_revision=rev):
                wins[n] += 1
            barrier.wait()  # the round is decided before anyone reads again
    threads = [threading.Thread(target=writer, args=(n,), name=f"test-cas-{n}") for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    final = stores[1].get("race")
    assert final is not None and final["revision"] == CAS_ROUNDS
    assert sum(wins) == CAS_ROUNDS  # exactly one winner in every round


def test_a_lease_is_renewed_while_its_instance_lives_and_the_task_fails_when_it_stops(two: Any) -> None:
    a, b = two
    store_a, store_b = a.task_store("A"), b.task_store("B")
    seen_b = Seen(store_b)
    store_a.create(record("t1"), max_per_principal=5, max_total=5)
    lease = f"{a.prefix}:tasks:lease"
    client = a.client
    first = client.zscore(lease, "t1")
    wait_until(lambda: client.zscore(lease, "t1") > first + 3 * LEASE_S * 1000, "three renewals")
    got = store_b.get("t1")
    assert got is not None and got["status"] == "working"  # alive: never failed meanwhile
    a.close()  # the instance stops renewing (its record stays "working")
    failed = seen_b.wait(lambda r: r["taskId"] == "t1" and r["status"] == "failed")  # B's sweep, no reader
    assert failed["error"] == LOST_ERROR
    again = store_b.get("t1")
    assert again is not None and again["status"] == "failed" and again["revision"] == failed["revision"]


def test_a_task_its_manager_no_longer_holds_is_renewed_no_more_and_fails(two: Any) -> None:
    a, b = two
    store_a, store_b = a.task_store("A"), b.task_store("B")
    held = {"t1", "t2"}
    store_a.alive = lambda: set(held)  # type: ignore[attr-defined]
    seen_b = Seen(store_b)
    for task_id in held:
        store_a.create(record(task_id), max_per_principal=5, max_total=5)
    held.discard("t2")  # its thread ended without recording an outcome (the store was away)
    failed = seen_b.wait(lambda r: r["taskId"] == "t2" and r["status"] == "failed")
    assert failed["error"] == LOST_ERROR
    lease = f"{a.prefix}:tasks:lease"
    first = a.client.zscore(lease, "t1")
    wait_until(lambda: a.client.zscore(lease, "t1") > first + 2 * LEASE_S * 1000, "t1's renewals")
    got = store_b.get("t1")
    assert got is not None and got["status"] == "working"


def test_the_sweep_forgets_the_lease_of_a_task_whose_record_vanished(two: Any) -> None:
    a, b = two
    store_a = a.task_store("A")
    store_a.alive = lambda: ()  # type: ignore[attr-defined]
    store_a.create(record("gone"), max_per_principal=5, max_total=5)
    a.client.delete(f"{a.prefix}:task:gone")  # as Redis does when the key's TTL passes
    lease = f"{a.prefix}:tasks:lease"
    wait_until(lambda: a.client.zscore(lease, "gone") is None, "the sweep to drop the lease")


def test_a_reader_fails_a_task_whose_lease_lapsed(redis: services.RedisServer) -> None:
    prefix = f"r{uuid.uuid4().hex[:8]}"
    a, b = backend(redis, prefix, task_lease_s=LEASE_S), backend(redis, prefix, task_lease_s=LEASE_S)
    try:
        store_a, store_b = a.task_store("A"), b.task_store("B")  # no threads: nobody renews or sweeps
        store_a.create(record("t1"), max_per_principal=5, max_total=5)
        got = store_b.get("t1")
        assert got is not None and got["status"] == "working"
        failed = wait_until(lambda: (r := store_b.get("t1")) is not None and r["status"] == "failed" and r,
                            "the lease to lapse")
        assert failed["error"] == LOST_ERROR and failed["revision"] == 1
        # a dead task no longer counts against its principal
        store_b.create(record("t2"), max_per_principal=1, max_total=5)
    finally:
        a.close()
        b.close()


def test_the_shared_key_is_adopted_by_every_instance_and_restored_after_a_flush(redis: services.RedisServer) -> None:
    prefix = f"k{uuid.uuid4().hex[:8]}"
    states = [SharedState(backend(redis, prefix)) for _ in range(2)]
    try:
        for state in states:
            state.attach(Server("k"))
        assert states[0].keys.current == states[1].keys.current
        shared = states[0].keys.current
        redis.client().delete(f"{prefix}:secret")  # Redis restarted empty
        states[1]._sync_key()
        assert bytes.fromhex(redis.client().get(f"{prefix}:secret").decode()) == shared
    finally:
        for state in states:
            state.close()


# ---- Redis out of reach --------------------------------------------------------------------------

def test_redis_out_of_reach_is_a_clear_error_and_never_a_crash() -> None:
    b = RedisBackend(f"redis://127.0.0.1:{services.free_port()}/0")
    store = b.task_store("A")
    b.start()
    try:
        started = time.monotonic()
        with pytest.raises(StateUnavailable) as info:
            store.get("t1")
        assert time.monotonic() - started < 3.0
        assert info.value.to_error()["code"] == -32006
        assert info.value.to_error()["data"] == {"retryAfterMs": 1000}
        b.publish({"k": "resource", "uri": "x"})  # never blocks, never raises
        assert not b.healthy()
    finally:
        started = time.monotonic()
        b.close()
        assert time.monotonic() - started < 3.0


@pytest.mark.timeout(60)
def test_redis_killed_and_restarted(tmp_path: pathlib.Path) -> None:
    with services.redis_server(tmp_path / "redis") as own:
        a, b = backend(own, "x", task_lease_s=5), backend(own, "x", task_lease_s=5)
        store_a, store_b = a.task_store("A"), b.task_store("B")
        a.start()
        b.start()
        try:
            wait_until(lambda: a.healthy() and b.healthy(), "both subscribed")
            store_a.create(record("before"), max_per_principal=5, max_total=5)
            own.kill()
            with pytest.raises(StateUnavailable):
                store_b.get("before")
            wait_until(lambda: not a.healthy() and not b.healthy(), "both to notice")
            own.start()
            wait_until(lambda: a.healthy() and b.healthy(), "both to reconnect")
            got = store_b.get("before")
            assert got is not None and got["status"] == "working"  # the append-only file kept it
            seen_b = Seen(store_b)
            store_a.create(record("after"), max_per_principal=5, max_total=5)
            seen_b.wait(lambda r: r["taskId"] == "after")  # the subscription is back
        finally:
            a.close()
            b.close()


# ---- no Redis on the path of a plain tool call ------------------------------------------------------

PLAIN_CALLS = 100
PERIODIC_ALLOWANCE = 4   # the backend's own periodic commands that may fall in the window


def test_a_plain_tool_call_sends_no_redis_command(redis: services.RedisServer, tmp_path: pathlib.Path) -> None:
    with services.instances(1, tmp_path, state_url=redis.url(prefix=f"n{uuid.uuid4().hex[:8]}")) as (inst,):
        wait_until(lambda: inst.metric("mcpsync_state_up") == 1.0, "the instance to subscribe")
        from httpclient import HttpMcp
        with services.Modern(inst.url) as modern, HttpMcp(inst.url) as session:
            session.initialize()
            modern.result("tools/call", {"name": "echo", "arguments": {"text": "warm"}})
            before = redis.commands()
            for n in range(PLAIN_CALLS):
                got = modern.result("tools/call", {"name": "echo", "arguments": {"text": f"m{n}"}})
                assert got["content"][0]["text"] == f"m{n}"
                assert session.call("tools/call", {"name": "echo", "arguments": {"text": f"s{n}"}})[
                    "content"][0]["text"] == f"s{n}"
            after = redis.commands()
    sent = {k: after.get(k, 0) - before.get(k, 0) for k in after if k not in ("info", "ping")}
    assert sum(sent.values()) <= PERIODIC_ALLOWANCE, {k: v for k, v in sent.items() if v}


@pytest.mark.timeout(60)
def test_an_instance_stops_cleanly_with_a_running_task_while_redis_is_down(tmp_path: pathlib.Path) -> None:
    with services.redis_server(tmp_path / "redis") as own:
        with services.instances(1, tmp_path, state_url=own.url()) as (inst,):
            wait_until(lambda: inst.metric("mcpsync_state_up") == 1.0, "the instance to subscribe")
            with services.Modern(inst.url) as m:
                task = m.result("tools/call", {"name": "slow_compute", "arguments": {"seconds": 600}})
                assert task["resultType"] == "task"
                own.kill()
                echoed = m.result("tools/call", {"name": "echo", "arguments": {"text": "still here"}})
                assert echoed["content"][0]["text"] == "still here"
                err = m.reply("tools/call", {"name": "slow_compute", "arguments": {"seconds": 1}})["error"]
                assert err["code"] == -32006  # a new task needs Redis
            started = time.monotonic()
            assert inst.stop() == 0  # SIGTERM: the task's cancel cannot be recorded, the exit is clean
            assert time.monotonic() - started < 15
        assert "Traceback" not in inst.log.read_text()
