"""``StdioChannel``: an upstream spawned as a subprocess, newline-delimited JSON on its pipes.

The child gets its own process group (``process.spawn``: a wrapper such as ``npx`` and the
server it starts are signalled together; the hub's ``Guardian`` ends the group if the hub
dies) and our environment plus the configured ``env``.

Two threads per child, both owned here and joined by ``close``:

* ``mcpsync-<role>-stdout-<name>`` (role: ``hub`` or ``client``) reads stdout in chunks
  and cuts it into lines of at most ``MAX_LINE_BYTES`` (longer ones are dropped and counted), routes the messages, and
  watches the processes (``process.ProcessWatch``): the end of stdout, or the exit of the
  child while something it started holds the pipe, means the upstream is lost. When the
  processes under the child that held the pipe (the real server under a wrapper such as
  ``npx``) have all ended while the child runs on, the reader pings the upstream itself
  (id ``LIVENESS_ID``, answered by the reader, never delivered): no answer within the
  probe timeout means the server is gone and the wrapper lingers: lost. Lines that are
  not JSON-RPC (text, or JSON from a logger) are counted and logged a few per window; past ``GARBAGE_MAX_LINES`` or
  ``GARBAGE_MAX_BYTES`` in one ``WINDOW_S`` the upstream is declared broken (lost, so it
  is restarted with backoff).
* ``mcpsync-<role>-stderr-<name>`` copies stderr into our log (``mcpsync.client``) under
  the upstream's name, each line cut at ``MAX_STDERR_LINE_BYTES`` and at most ``STDERR_LOG_LINES`` per
  window; the last ``STDERR_TAIL_LINES`` lines are kept for the upstream's ``lastError``.

Writes go through ``_write_lock`` (one writer at a time on the pipe) and never block: the
pipe is non-blocking and a writer waits for room with ``poll``, until the request timeout
or until ``close`` wakes it through ``_wake`` (a pipe). A message half written when time
runs out breaks the stream: the upstream is lost. So ``close`` never waits behind a writer
stuck on a child that stopped reading: it wakes the writer, closes stdin, and goes on with
the polite shutdown the MCP stdio transport describes (wait, SIGTERM the group, wait,
SIGKILL), skipping the wait for a child already known to be broken.
"""
from __future__ import annotations

import logging
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from typing import Any, Callable

from ...errors import ConnectionClosed, RequestTimeout
from ...protocol import jsonrpc
from .. import process
from .base import ChannelBase, Deliver
from ..endpoint import Endpoint
from ..correlator import Call
from ..lines import LineSplitter, LogBudget, Window

log = logging.getLogger("mcpsync.client")

MAX_LINE_BYTES = 16 * 1024 * 1024     # one message on stdout
MAX_STDERR_LINE_BYTES = 4096          # one stderr line, as logged
READ_CHUNK_BYTES = 64 * 1024
WINDOW_S = 10.0                       # the window of the rate limits below
GARBAGE_MAX_LINES = 1000              # non-JSON-RPC stdout lines per window before "broken"
GARBAGE_MAX_BYTES = 32 * 1024 * 1024  # bytes of them (and of dropped lines) per window
GARBAGE_LOG_LINES = 5                 # non-JSON-RPC lines logged per window
STDERR_LOG_LINES = 200                # stderr lines logged per window
STDERR_TAIL_LINES = 5                 # last stderr lines kept for lastError
STDERR_TAIL_CHARS = 200               # each cut to this
TERM_WAIT_S = 2.0                     # after SIGTERM, before SIGKILL
EXIT_STATUS_WAIT_S = 0.5              # after EOF on stdout, for the exit status (and stderr's end)
WRITE_LOCK_WAIT_S = 2.0               # close(): for a woken writer to leave
LIVENESS_ID = "mcpsync-hub-liveness"  # the id of the reader's own ping


class _StdoutReading:
    """What the stdout reader keeps (that thread's alone)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.watch = process.ProcessWatch(proc)
        self.poller = select.poll()
        for f in [self.fd, *self.watch.fds()]:
            self.poller.register(f, select.POLLIN)
        self.splitter = LineSplitter(MAX_LINE_BYTES, keep_cut=False)
        self.garbage = Window(WINDOW_S)
        self.budget = LogBudget(GARBAGE_LOG_LINES, WINDOW_S)


class StdioChannel(ChannelBase):
    transport = "stdio"
    cancels_by_closing = False

    def __init__(self, cfg: Endpoint, guardian: process.Guardian | None = None) -> None:
        super().__init__(cfg)
        self.proc: subprocess.Popen[bytes] | None = None
        self._guardian = guardian
        # One writer at a time on the child's stdin: held for one message's write, which
        # waits at most the request timeout and ends at once when close() wakes it.
        self._write_lock = threading.Lock()
        # Guards _closing and _broken (flag flips only). close() runs once.
        self._state_lock = threading.Lock()
        self._closing = False
        self._broken = False
        self._wake: tuple[int, int] | None = None  # a pipe; a byte in it wakes blocked writers
        self._threads: list[threading.Thread] = []
        # Written by the stderr thread only; others read list() snapshots.
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        # Each key has one writer: stdout* the stdout reader, stderr* the stderr reader.
        self.counts = {"stdoutBadLines": 0, "stdoutDroppedLines": 0, "stdoutLinesNotLogged": 0,
                       "stderrCutLines": 0, "stderrLinesNotLogged": 0}
        # The stdout reader's own ping: (deadline, what it means if unanswered). Reader only.
        self._liveness: tuple[float, str] | None = None

    def open(self, deliver: Deliver, lost: Callable[[str], None], timeout: float) -> None:
        cfg = self.cfg
        env = dict(os.environ)
        env.update(cfg.env)
        assert cfg.command is not None
        exe = cfg.command
        if os.sep not in exe:
            found = shutil.which(exe, path=env.get("PATH"))
            if found is None:
                raise ConnectionClosed(f"command not found: {exe!r} (not on PATH)")
            exe = found
        self.attach(deliver, lost)
        self._wake = os.pipe()
        try:
            self.proc = process.spawn([exe, *cfg.args], env=env, cwd=cfg.cwd, guardian=self._guardian)
        except OSError as exc:
            raise ConnectionClosed(f"cannot start {cfg.command!r}: {exc.strerror or exc}") from None
        assert self.proc.stdin is not None
        os.set_blocking(self.proc.stdin.fileno(), False)
        log.info("upstream %s: started pid %d: %s", self.name, self.proc.pid,
                 " ".join([cfg.command, *cfg.args]))
        for role, target in (("stdout", self._read_stdout), ("stderr", self._read_stderr)):
            t = threading.Thread(target=target, name=f"mcpsync-{self.cfg.role}-{role}-{self.name}", daemon=True)
            self._threads.append(t)
            t.start()

    # ---- stdout ------------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        proc = self.proc
        assert proc is not None
        r = _StdoutReading(proc)
        reason: str | None = None
        try:
            while reason is None:
                wait = r.watch.timeout_s
                if self._liveness is not None:
                    left = max(0.0, self._liveness[0] - time.monotonic())
                    wait = left if wait is None else min(wait, left)
                ready = {f for f, _ev in r.poller.poll(None if wait is None else wait * 1000)}
                if r.fd in ready:  # drain the pipe before looking at the processes
                    data = os.read(r.fd, READ_CHUNK_BYTES)
                    if not data:
                        reason = self._exit_reason(proc)
                        break
                    dropped = r.splitter.dropped_bytes
                    for line, cut in r.splitter.feed(data):
                        reason = reason or self._line(r, line, cut)
                    if r.splitter.dropped_bytes > dropped and reason is None:  # the rest of a long line
                        reason = self._garbage(r, None, r.splitter.dropped_bytes - dropped, 0)
                    continue
                reason, gone, done = r.watch.check(ready)
                for f in done:
                    r.poller.unregister(f)
                if gone and reason is None:
                    self._ask_alive(gone, proc.pid)
                if reason is None and self._liveness is not None and time.monotonic() >= self._liveness[0]:
                    reason = self._liveness[1]
        except (OSError, ValueError) as exc:
            log.debug("upstream %s: stdout read ended: %s", self.name, exc)
            reason = self._exit_reason(proc)
        finally:
            r.watch.close()
        held = r.budget.pending()
        if held:
            log.warning("upstream %s: %d more non-JSON-RPC lines on stdout were not logged", self.name, held)
        with self._state_lock:
            closing = self._closing
        self._lost(f"closed by the {self.cfg.role}" if closing else reason)

    def _line(self, r: _StdoutReading, line: bytes, cut: bool) -> str | None:
        """One stdout line: deliver it, or count it as garbage (the reason when that makes
        the upstream broken)."""
        if cut:
            self.counts["stdoutDroppedLines"] += 1
            return self._garbage(r, f"a message over {MAX_LINE_BYTES} bytes was dropped", MAX_LINE_BYTES, 1)
        line = line.strip()
        if not line:
            return None
        msg: Any = None
        if line[:1] in (b"{", b"["):
            try:
                msg = jsonrpc.decode(line)
            except Exception:
                msg = None
        items = msg if isinstance(msg, list) else [msg]
        if not items or not all(isinstance(m, dict) and m.get("jsonrpc") == "2.0" for m in items):
            self.counts["stdoutBadLines"] += 1  # text, or JSON that is not JSON-RPC (a JSON logger)
            return self._garbage(r, f"a line on stdout that is not JSON-RPC: {line[:200]!r}", len(line), 1)
        for added in r.watch.discover(r.fd):
            r.poller.register(added, select.POLLIN)
        if isinstance(msg, dict) and msg.get("id") == LIVENESS_ID and "method" not in msg:
            self._liveness = None  # any answer will do: the upstream is alive
            log.info("upstream %s: still answers; going on", self.name)
            return None
        self.deliver_all(items, None)
        return None

    def _garbage(self, r: _StdoutReading, what: str | None, nbytes: int, events: int) -> str | None:
        """Count ``events`` bad lines of ``nbytes`` (logging ``what`` within the budget);
        returns why the upstream is broken once the window's limits are passed."""
        if what is not None:
            self._log_within(r.budget, logging.WARNING, f"upstream {self.name}: {what}",
                             f"upstream {self.name}: %d more non-JSON-RPC lines on stdout were not logged",
                             "stdoutLinesNotLogged")
        garbage = r.garbage
        garbage.add(time.monotonic(), nbytes, events)
        if garbage.events > GARBAGE_MAX_LINES or garbage.bytes > GARBAGE_MAX_BYTES:
            with self._state_lock:
                self._broken = True
            return (f"broken: it wrote {garbage.events} non-JSON-RPC lines ({garbage.bytes} bytes) to stdout "
                    f"within {WINDOW_S:g} s (an MCP stdio server writes only JSON-RPC there)")
        return None

    def _ask_alive(self, pids: list[int], child: int) -> None:
        """The processes under the child that held the pipe have ended: ping the upstream
        (the reader sees the answer) and give it the probe timeout to answer."""
        limit = self.cfg.timeouts.probe
        deadline = time.monotonic() + limit
        gone = (f"the server process {', '.join(map(str, pids))} under pid {child} ended, "
                f"and pid {child} runs on without answering a ping within {limit:g} s")
        log.info("upstream %s: pid %s under pid %d ended; is the upstream still there?",
                 self.name, ", ".join(map(str, pids)), child)
        try:
            self._write_message(jsonrpc.encode(jsonrpc.request(LIVENESS_ID, "ping", None)) + b"\n", limit)
        except ConnectionClosed:
            pass  # nobody reads stdin any more: the end of stdout will say why (or the deadline)
        self._liveness = (deadline, gone)

    def _exit_reason(self, proc: subprocess.Popen[bytes]) -> str:
        """After the end of stdout: the exit status, once stderr has been read to its end
        too (both bounded by ``EXIT_STATUS_WAIT_S``)."""
        with self._state_lock:
            if self._closing:
                return f"closed by the {self.cfg.role}"
        try:
            code: int | None = proc.wait(EXIT_STATUS_WAIT_S)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and self._guardian is not None and not process.group_alive(proc.pid):
            self._guardian.forget(proc.pid)  # gone for good: its number may be reused
        for t in self._threads:
            if t.name.startswith(f"mcpsync-{self.cfg.role}-stderr-") and t is not threading.current_thread():
                t.join(EXIT_STATUS_WAIT_S)
        return process.describe_exit(code)

    # ---- stderr ------------------------------------------------------------------------------

    def _read_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        fd = proc.stderr.fileno()
        splitter = LineSplitter(MAX_STDERR_LINE_BYTES)
        budget = LogBudget(STDERR_LOG_LINES, WINDOW_S)
        try:
            while True:
                data = os.read(fd, READ_CHUNK_BYTES)
                if not data:
                    break
                for line, cut in splitter.feed(data):
                    self._stderr_line(line, cut, budget)
        except (OSError, ValueError):
            pass
        self._stderr_line(splitter.flush(), False, budget)
        held = budget.pending()
        if held:
            log.info("[%s] (%d more stderr lines were not logged)", self.name, held)

    def _stderr_line(self, raw: bytes, cut: bool, budget: LogBudget) -> None:
        text = raw.decode("utf-8", "replace").rstrip()
        if not text:
            return
        if cut:
            self.counts["stderrCutLines"] += 1
            text += f" [... cut at {MAX_STDERR_LINE_BYTES} bytes]"
        self.stderr_tail.append(text if len(text) <= STDERR_TAIL_CHARS else text[:STDERR_TAIL_CHARS] + "...")
        self._log_within(budget, logging.INFO, f"[{self.name}] {text}",
                         f"[{self.name}] (%d more stderr lines were not logged)", "stderrLinesNotLogged")

    def _log_within(self, budget: LogBudget, level: int, text: str, held_text: str, counter: str) -> None:
        """Log ``text`` if the budget allows, else count it in ``counts[counter]`` (whose
        one writer is the calling reader); first say how many lines the window that just
        ended held back (``held_text % n``)."""
        allowed, held = budget.take(time.monotonic())
        if held:
            log.log(level, held_text, held)
        if allowed:
            log.log(level, "%s", text)
        else:
            self.counts[counter] += 1

    # ---- writing -----------------------------------------------------------------------------

    def send(self, msg: dict[str, Any], call: Call | None = None) -> None:
        """Write one message. Waits for room in the pipe up to the request timeout: raises
        ``RequestTimeout`` if none of it could be written, ``ConnectionClosed`` when the
        channel is (or, for a half-written message, becomes) unusable."""
        data = jsonrpc.encode(msg) + b"\n"
        limit = self.cfg.timeouts.request
        sent = self._write_message(data, limit)
        if sent == len(data):
            return
        if sent == 0:
            raise RequestTimeout(f"upstream {self.name!r} did not read its stdin for {limit:g} s")
        with self._state_lock:
            self._broken = True
        reason = f"broken: it stopped reading its stdin (a message stayed half written for {limit:g} s)"
        self._lost(reason)
        raise ConnectionClosed(f"upstream {self.name!r}: {reason}")

    def _write_message(self, data: bytes, limit: float) -> int:
        """Write ``data`` under the write lock; returns how much of it went out within
        ``limit`` seconds (0 also when the lock was not free in time). Raises
        ``ConnectionClosed`` when the channel is closed or the pipe broken."""
        deadline = time.monotonic() + limit
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise ConnectionClosed(f"upstream {self.name!r} is not running")
        if not self._write_lock.acquire(timeout=limit):
            return 0
        try:
            with self._state_lock:
                if self._closing:
                    raise ConnectionClosed(f"upstream {self.name!r}: closed by the {self.cfg.role}")
            return self._write(proc.stdin.fileno(), memoryview(data), deadline)
        finally:
            self._write_lock.release()

    def _write(self, fd: int, data: memoryview, deadline: float) -> int:
        """Write ``data`` (the caller holds the write lock); returns how much went out by
        the deadline. Raises ``ConnectionClosed`` when closed or the pipe is broken."""
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        assert self._wake is not None
        poller.register(self._wake[0], select.POLLIN)
        sent = 0
        while sent < len(data):
            with self._state_lock:
                if self._closing:
                    raise ConnectionClosed(f"upstream {self.name!r}: closed by the {self.cfg.role}")
            try:
                sent += os.write(fd, data[sent:])
                continue
            except BlockingIOError:
                pass
            except (OSError, ValueError) as exc:
                raise ConnectionClosed(f"upstream {self.name!r}: cannot write to the process: {exc}") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return sent
            poller.poll(remaining * 1000)
        return sent

    def end(self, call: Call) -> None:
        pass

    def info(self) -> dict[str, Any]:
        proc = self.proc
        return {"pid": proc.pid if proc is not None else None, **self.counts}

    # ---- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Wake any blocked writer, close stdin, wait, SIGTERM the group, wait, SIGKILL it;
        reap; join the readers. Blocks up to the shutdown timeout plus twice
        ``TERM_WAIT_S`` (and a little for the threads); a broken child gets no shutdown wait."""
        with self._state_lock:
            if self._closing:
                return
            self._closing = True
            broken = self._broken
        proc, wake = self.proc, self._wake
        if wake is None:
            return
        if proc is None:  # the start failed
            for wfd in wake:
                os.close(wfd)
            self._wake = None
            return
        os.write(wake[1], b"x")
        idle = self._write_lock.acquire(timeout=WRITE_LOCK_WAIT_S)
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass
        finally:
            if idle:
                self._write_lock.release()
        try:
            proc.wait(0 if broken else self.cfg.timeouts.shutdown)
        except subprocess.TimeoutExpired:
            process.signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(TERM_WAIT_S)
            except subprocess.TimeoutExpired:
                process.signal_group(proc, signal.SIGKILL)
                try:
                    proc.wait(TERM_WAIT_S)
                except subprocess.TimeoutExpired:
                    log.error("upstream %s: pid %d does not die", self.name, proc.pid)
        process.signal_group(proc, signal.SIGKILL, group_only=True)  # a wrapper's leftovers
        if self._guardian is not None:
            self._guardian.forget(proc.pid)
        self._close_fds(proc, wake=idle)
        log.info("upstream %s: pid %d ended (%s)", self.name, proc.pid, proc.returncode)

    def _close_fds(self, proc: subprocess.Popen[bytes], *, wake: bool) -> None:
        """Join the readers, then close the descriptors nobody uses any more (``wake``: no
        writer is left polling the wake pipe)."""
        me = threading.current_thread()
        stuck = False
        for t in self._threads:
            if t is not me:
                t.join(TERM_WAIT_S)
                if t.is_alive():
                    stuck = True
                    log.warning("upstream %s: thread %s did not stop", self.name, t.name)
        if stuck:
            return  # a reader still uses its descriptor: leave them (a leak, logged)
        for stream in (proc.stdout, proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if wake and self._wake is not None:
            for wfd in self._wake:
                os.close(wfd)
            self._wake = None
