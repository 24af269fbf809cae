"""Connection floods shared by ``scripts/stress.py``, ``scripts/bench.py`` and the tests.

* ``open_idle``: keep-alive connections that each made one request, read the answer, and
  then sit idle (what a crowd of well-behaved clients leaves behind).
* ``Slowloris``: connections that send a partial request head and then one more byte now
  and then, forever (the classic way to pin a thread-per-connection server).
* ``legit_client``: meanwhile, a new client that initializes a session and calls ``echo``;
  each step is timed.

The flood sockets are spread over several loopback source addresses (127.0.0.2, .3, …:
``FLOOD_ADDRESSES``) so that a per-client-address cap sees several clients, as it would in
the wild; the measured client comes from 127.0.0.1. Only loopback targets are flooded.
Every blocking call has a timeout; the trickling thread is owned by its ``Slowloris`` and
joined by ``close()``.
"""
from __future__ import annotations

import ipaddress
import resource
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from _loadclient import HttpSession, classify

CONNECT_TIMEOUT_S = 10.0
FLOOD_ADDRESSES = 8               # source addresses 127.0.0.2 … 127.0.0.9
OPENERS = 16                      # threads opening idle connections
TRICKLE = b"X-Slow: " + b"a" * 4000   # what a slowloris sends, a byte at a time


def raise_nofile(need: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``need`` (never above the hard
    limit); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def _source(i: int, host: str) -> tuple[str, int] | None:
    """A loopback source address for flood socket ``i`` (IPv4 loopback targets only)."""
    try:
        if not ipaddress.ip_address(host).is_loopback or ":" in host:
            return None
    except ValueError:
        return None
    return (f"127.0.0.{2 + i % FLOOD_ADDRESSES}", 0)


def _connect(host: str, port: int, i: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        source = _source(i, host)
        if source is not None:
            sock.bind(source)
        sock.settimeout(CONNECT_TIMEOUT_S)
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _read_response(sock: socket.socket) -> int:
    """Read one response with a Content-Length body; its status code."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before the response head")
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed inside the response body")
        body += data
    return status


@dataclass
class IdleFlood:
    """Connections that made one request each and now idle."""

    sockets: list[socket.socket] = field(default_factory=list)
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    def still_open(self) -> int:
        """How many the server has not closed (a non-blocking peek at each)."""
        alive = 0
        for sock in self.sockets:
            try:
                sock.setblocking(False)
                alive += sock.recv(1, socket.MSG_PEEK) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets = []


def open_idle(host: str, port: int, count: int, path: str = "/mcp") -> IdleFlood:
    """Open ``count`` keep-alive connections, each after one request (``GET path``, any
    complete answer will do) and its response. Blocks until all are open or failed."""
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n"
               f"\r\n").encode()
    flood = IdleFlood()
    lock = threading.Lock()  # guards flood's fields; taken by the opener threads

    def one(i: int) -> None:
        try:
            sock = _connect(host, port, i)
        except OSError:
            with lock:
                flood.failed += 1
            return
        try:
            sock.sendall(request)
            status = _read_response(sock)
        except (OSError, ValueError, IndexError):
            sock.close()
            with lock:
                flood.failed += 1
            return
        with lock:
            flood.sockets.append(sock)
            flood.statuses[status] = flood.statuses.get(status, 0) + 1

    started = time.monotonic()
    with ThreadPoolExecutor(OPENERS, thread_name_prefix="flood-open") as pool:
        list(pool.map(one, range(count)))
    flood.seconds = time.monotonic() - started
    return flood


class Slowloris:
    """``count`` connections sending a partial head, then a byte every ``interval_s`` each,
    from one thread (``flood-slowloris``) until ``close()``. ``cut`` counts connections the
    server closed; ``cut_after_s`` how long each had lived by then."""

    def __init__(self, host: str, port: int, count: int, interval_s: float = 1.0,
                 path: str = "/mcp") -> None:
        self.interval_s = interval_s
        self.cut_after_s: list[float] = []
        self.answers: list[int] = []     # status codes the server answered cut ones with
        self.failed = 0
        self.first_cut = threading.Event()  # set by the trickling thread at the first cut
        self._stop = threading.Event()  # set by close(): the trickling thread ends
        self._socks: list[tuple[socket.socket, float]] = []
        start = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                 f"Content-Type: application/json\r\n").encode()
        for i in range(count):
            try:
                sock = _connect(host, port, i)
                sock.sendall(start)
                sock.setblocking(False)
            except OSError:
                self.failed += 1
                continue
            self._socks.append((sock, time.monotonic()))
        self._thread = threading.Thread(target=self._trickle, name="flood-slowloris",
                                        daemon=True)
        self._thread.start()

    @property
    def open(self) -> int:
        return len(self._socks)

    @property
    def cut(self) -> int:
        return len(self.cut_after_s)

    def still_open(self) -> int:
        """How many the server has neither answered nor closed (a peek at each)."""
        alive = 0
        for sock, _ in list(self._socks):
            try:
                sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
        return alive

    def _trickle(self) -> None:
        sent = 0
        while not self._stop.wait(self.interval_s):  # pacing, not synchronization
            byte = TRICKLE[sent % len(TRICKLE):sent % len(TRICKLE) + 1]
            sent += 1
            alive = []
            now = time.monotonic()
            for sock, opened in self._socks:
                try:
                    peeked = sock.recv(65536, socket.MSG_PEEK)
                    if peeked[:9] == b"HTTP/1.1 " and peeked[9:12].isdigit():
                        self.answers.append(int(peeked[9:12]))  # a 408, or a 503 refusal
                    raise ConnectionError("answered or closed")
                except BlockingIOError:
                    pass
                except OSError:
                    self.cut_after_s.append(now - opened)
                    self.first_cut.set()
                    sock.close()
                    continue
                try:
                    sock.send(byte)
                    alive.append((sock, opened))
                except BlockingIOError:
                    alive.append((sock, opened))
                except OSError:
                    self.cut_after_s.append(now - opened)
                    self.first_cut.set()
                    sock.close()
            self._socks = alive

    def close(self) -> None:
        self._stop.set()
        self._thread.join(self.interval_s + 10.0)
        for sock, _ in self._socks:
            sock.close()
        self._socks = []


@dataclass
class Legit:
    """A new client's steps during a flood: latencies (ms) of the successful ones."""

    latencies_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return len(self.latencies_ms) + len(self.failures)

    def percentile(self, pct: float) -> float:
        values = sorted(self.latencies_ms)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(len(values) * pct / 100))]


def legit_client(url: str, calls: int, out: Legit | None = None, timeout_s: float = 30.0) -> Legit:
    """A new session (initialize, timed) and ``calls`` echo calls on it (each timed)."""
    legit = out if out is not None else Legit()
    session = HttpSession(url, timeout=timeout_s)
    try:
        started = time.perf_counter()
        try:
            session.initialize()
        except Exception as exc:
            legit.failures.append(f"initialize: {classify(exc)[1]}")
            return legit
        legit.latencies_ms.append((time.perf_counter() - started) * 1000)
        for i in range(calls):
            started = time.perf_counter()
            try:
                session.echo(f"legit-{i}")
            except Exception as exc:
                legit.failures.append(f"echo: {classify(exc)[1]}")
                continue
            legit.latencies_ms.append((time.perf_counter() - started) * 1000)
    finally:
        session.close()
    return legit


def process_threads(pid: int) -> int:
    """Threads of a process (Linux /proc)."""
    return _proc_status(pid, "Threads")


def _proc_status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for pid {pid}")


# ---- measuring a server under a flood (bench.py) ------------------------------------------------

def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB (Linux /proc)."""
    return _proc_status(pid, "VmRSS")


@dataclass
class FloodReport:
    """What a server did under one flood."""

    wanted: int                      # flood connections asked for
    held: int                        # ... still open when the new client had finished
    refused: int                     # ... not connected, or answered 503 / closed at once
    threads: int                     # the server's threads during the flood
    kib_per_conn: float              # its RSS growth per held connection
    legit: Legit
    cut: int = 0                     # slowloris connections the server closed meanwhile
    head_cut_s: float | None = None  # a head trickled a byte a second: cut after (None: not)
    head_answer: int | None = None   # ... with this status (408; 503: refused at the cap)


def measure_idle(url: str, pid: int, count: int, calls: int = 50) -> FloodReport:
    """``count`` idle keep-alive connections, then a new client's initialize + ``calls``."""
    host, port, path = _split(url)
    raise_nofile(count + 1024)
    rss0 = rss_kib(pid)
    idle = open_idle(host, port, count, path)
    try:
        threads, legit, rss1 = _meanwhile(url, pid, calls)
        held = idle.still_open()
        refused = idle.failed + idle.statuses.get(503, 0)
    finally:
        idle.close()
    return FloodReport(count, held, refused, threads, (rss1 - rss0) / max(held, 1), legit)


def measure_slowloris(url: str, pid: int, count: int, calls: int = 50,
                      head_watch_s: float = 12.0) -> FloodReport:
    """``count`` slowloris connections; meanwhile a new client's initialize + ``calls``,
    and one more connection trickling a head a byte a second: when is it cut?"""
    host, port, path = _split(url)
    raise_nofile(count + 1024)
    rss0 = rss_kib(pid)
    slow = Slowloris(host, port, count, interval_s=1.0, path=path)
    watched = Slowloris(host, port, 1, interval_s=1.0, path=path)
    try:
        threads, legit, rss1 = _meanwhile(url, pid, calls)
        held = slow.still_open()
        watched.first_cut.wait(head_watch_s)
    finally:
        slow.close()
        watched.close()
    return FloodReport(count, held, count - held, threads, (rss1 - rss0) / max(held, 1), legit,
                       cut=slow.cut, head_cut_s=watched.cut_after_s[0] if watched.cut else None,
                       head_answer=watched.answers[0] if watched.answers else None)


def _meanwhile(url: str, pid: int, calls: int) -> tuple[int, Legit, int]:
    """A new client's steps during a flood; the server's threads (the most seen before and
    after) and its RSS afterwards."""
    threads = process_threads(pid)
    legit = legit_client(url, calls)
    return max(threads, process_threads(pid)), legit, rss_kib(pid)


def _split(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
