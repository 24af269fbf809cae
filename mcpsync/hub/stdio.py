"""``StdioChannel``: an upstream spawned as a subprocess, newline-delimited JSON on its pipes.

The child gets its own process group (so a wrapper such as ``npx`` dies with what it
started) and the hub's environment plus the configured ``env``. Two threads per child,
both owned here and joined by ``close``: ``mcpsync-hub-stdout-<name>`` reads and routes
messages, ``mcpsync-hub-stderr-<name>`` copies the child's stderr into the hub's log under
the upstream's name. End of stdout means the child is gone: ``lost`` is reported with its
exit status.

``close`` is the polite shutdown the MCP stdio transport describes: close stdin, wait,
SIGTERM the group, wait, SIGKILL, and always reap the child (no zombies).

Writes go through ``_write_lock`` (this pipe's one writer at a time; held for one write and
flush). A child that stops reading could block a writer on a full pipe: the request's
timeout then fails the call, and the supervisor's restart kills the child, which ends the
write with ``BrokenPipeError``.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
from typing import IO, Any, Callable

from ..errors import ConnectionClosed
from ..protocol import jsonrpc
from .client import Deliver
from .config import UpstreamConfig
from .correlator import Call

log = logging.getLogger("mcpsync.hub")

MAX_LINE_BYTES = 16 * 1024 * 1024
TERM_WAIT_S = 2.0            # after SIGTERM, before SIGKILL
EXIT_STATUS_WAIT_S = 0.5     # after EOF on stdout, for the exit status to report


class StdioChannel:
    transport = "stdio"
    cancels_by_closing = False

    def __init__(self, cfg: UpstreamConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.modern = False
        self.proc: subprocess.Popen[bytes] | None = None
        # Serializes writes to the child's stdin (one message = one write + flush).
        self._write_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._deliver: Deliver = lambda msg, call: None
        self._lost: Callable[[str], None] = lambda reason: None
        self._closing = False

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
        self._deliver, self._lost = deliver, lost
        try:
            self.proc = subprocess.Popen([exe, *cfg.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env, cwd=cfg.cwd,
                                         start_new_session=True)
        except OSError as exc:
            raise ConnectionClosed(f"cannot start {cfg.command!r}: {exc.strerror or exc}") from None
        log.info("upstream %s: started pid %d: %s", self.name, self.proc.pid,
                 " ".join([cfg.command, *cfg.args]))
        for role, target in (("stdout", self._read_stdout), ("stderr", self._read_stderr)):
            t = threading.Thread(target=target, name=f"mcpsync-hub-{role}-{self.name}", daemon=True)
            self._threads.append(t)
            t.start()

    def _read_stdout(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        out: IO[bytes] = proc.stdout
        try:
            while True:
                line = out.readline(MAX_LINE_BYTES + 1)
                if not line:
                    break
                if len(line) > MAX_LINE_BYTES:
                    log.warning("upstream %s: a message over %d bytes was dropped", self.name, MAX_LINE_BYTES)
                    while line and not line.endswith(b"\n"):
                        line = out.readline(MAX_LINE_BYTES)
                    continue
                line = line.strip()
                if not line:
                    continue
                try:
                    msg = jsonrpc.decode(line)
                except Exception:
                    log.warning("upstream %s wrote a non-JSON line to stdout: %.200r", self.name, line)
                    continue
                for one in msg if isinstance(msg, list) else [msg]:
                    try:
                        self._deliver(one, None)
                    except Exception:
                        log.exception("upstream %s: handling a message failed", self.name)
        except (OSError, ValueError) as exc:
            log.debug("upstream %s: stdout read ended: %s", self.name, exc)
        if self._closing:
            self._lost("closed by the hub")
            return
        try:
            code: Any = proc.wait(EXIT_STATUS_WAIT_S)
        except subprocess.TimeoutExpired:
            code = None
        if code is None:
            self._lost("the process closed its stdout")
        elif code < 0:
            try:
                signame = signal.Signals(-code).name
            except ValueError:
                signame = str(-code)
            self._lost(f"the process was killed by {signame}")
        else:
            self._lost(f"the process exited with status {code}")

    def _read_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        try:
            for raw in proc.stderr:
                text = raw.decode("utf-8", "replace").rstrip()
                if text:
                    log.info("[%s] %s", self.name, text)
        except (OSError, ValueError):
            pass

    def send(self, msg: dict[str, Any], call: Call | None = None) -> None:
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise ConnectionClosed(f"upstream {self.name!r} is not running")
        data = jsonrpc.encode(msg) + b"\n"
        with self._write_lock:
            try:
                proc.stdin.write(data)
                proc.stdin.flush()
            except (OSError, ValueError) as exc:
                raise ConnectionClosed(f"upstream {self.name!r}: cannot write to the process: {exc}") from None

    def end(self, call: Call) -> None:
        pass

    def info(self) -> dict[str, Any]:
        proc = self.proc
        return {"pid": proc.pid if proc is not None else None}

    def close(self) -> None:
        """Close stdin, wait, SIGTERM, wait, SIGKILL; reap; join the readers. Blocks up to
        the shutdown timeout plus ``TERM_WAIT_S`` (and a little for the threads)."""
        with self._write_lock:
            if self._closing:
                return
            self._closing = True
        proc = self.proc
        if proc is None:
            return
        with self._write_lock:
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
        # (_closing is written under _write_lock so that close runs once.)
        try:
            proc.wait(self.cfg.timeouts.shutdown)
        except subprocess.TimeoutExpired:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(TERM_WAIT_S)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait()
        self._signal(proc, signal.SIGKILL, group_only=True)  # leftovers of a wrapper (npx ...)
        me = threading.current_thread()
        for t in self._threads:
            if t is not me:
                t.join(TERM_WAIT_S)
                if t.is_alive():
                    log.warning("upstream %s: thread %s did not stop", self.name, t.name)
        for stream in (proc.stdout, proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        log.info("upstream %s: pid %d ended (%s)", self.name, proc.pid, proc.returncode)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int, *, group_only: bool = False) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            if not group_only and proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass
