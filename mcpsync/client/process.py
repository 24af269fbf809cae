"""The processes of stdio servers (a hub's upstreams, a Client's server): started in a group
of their own, watched, and never outliving the process that started them.

* ``spawn`` starts a command in a new session, so the process and everything it starts (a
  wrapper such as ``npx`` and the real server under it) form one process group that the
  hub signals as a whole on stop and restart.
* ``Guardian`` is a small helper process (``python -S -c``, in a session of its own) that
  the hub (or, for ``mcpsync.Client``, ``shared_guardian``: one per process) tells about
  every group it starts and ends, one line on the guardian's stdin
  each. When that stdin reaches end of file -- the hub closed it, or the hub died in any
  way, SIGKILL included, since the kernel closes a dead process's descriptors -- it sends
  SIGTERM to every group still listed, waits up to ``GUARD_TERM_WAIT_S`` and SIGKILLs the
  rest. We do not use ``PR_SET_PDEATHSIG``: it reaches only the direct child (the server
  behind a wrapper would survive), it fires when the *thread* that forked exits (the hub
  forks on supervisor and request threads, which come and go), it needs a ``preexec_fn``
  (no vfork, unsafe with threads), and it exists on Linux only.
* ``ProcessWatch`` (Linux pidfds; elsewhere a periodic ``poll``) tells the stdout reader
  when the process it started exits while something else still holds the pipe, and when
  the processes under it that held the pipe are all gone (``pipe_holders`` finds them:
  the real server under a wrapper, or a helper the server started) while it runs on.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from typing import Any, Mapping

log = logging.getLogger("mcpsync.client")

GUARD_TERM_WAIT_S = 2.0      # the guardian's grace between SIGTERM and SIGKILL
GUARD_EXIT_WAIT_S = 5.0      # how long close() waits for the guardian to finish
MAX_WALK = 256               # processes looked at when searching a child's descendants
PROCESS_CHECK_S = 1.0        # without pidfds: how often the reader polls the child's exit

# Run as ``python -S -E -c``: reads "+PGID" / "-PGID" lines until end of file, then ends
# the groups still listed. Signals from the terminal are ignored (only EOF ends it).
GUARD_CODE = f"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
groups = set()
for line in sys.stdin.buffer:
    op, pg = line[:1], line[1:].strip()
    if pg.isdigit():
        (groups.add if op == b"+" else groups.discard)(int(pg))
def signal_all(sig):
    left = set()
    for pg in groups:
        try:
            os.killpg(pg, sig)
            left.add(pg)
        except OSError:
            pass
    return left
groups = signal_all(signal.SIGTERM)
deadline = time.monotonic() + {GUARD_TERM_WAIT_S!r}
while groups and time.monotonic() < deadline:
    time.sleep(0.05)
    groups = signal_all(0)
signal_all(signal.SIGKILL)
"""


def spawn(argv: list[str], *, env: Mapping[str, str], cwd: str | None,
          guardian: "Guardian | None") -> subprocess.Popen[bytes]:
    """Start ``argv`` with piped stdio in a new session (its own process group) and tell
    the guardian. Raises ``OSError``."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(env), cwd=cwd, bufsize=0,
                            start_new_session=True)
    if guardian is not None:
        guardian.watch(proc.pid)
    return proc


def signal_group(proc: subprocess.Popen[bytes], sig: int, *, group_only: bool = False) -> None:
    """Signal the process group ``proc`` leads (falling back to ``proc`` itself)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        if not group_only and proc.poll() is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass


def describe_exit(code: int | None) -> str:
    if code is None:
        return "the process closed its stdout"
    if code < 0:
        try:
            return f"the process was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"the process was killed by signal {-code}"
    return f"the process exited with status {code}"


class Guardian:
    """Ends the process groups of its owner's stdio servers when the owner ends, however it
    ends (see the module docstring). ``start`` and ``close`` belong to the owner (a ``Hub``,
    or ``shared_guardian`` for every ``Client``); ``watch`` and ``forget`` may be called
    from any thread."""

    def __init__(self) -> None:
        # Guards _proc and _fd (writes to the guardian's stdin: one short non-blocking
        # write each, the only I/O under it) and _closed.
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self._closed = False

    def start(self) -> "Guardian":
        python = _python()
        if python is None:
            log.warning("no Python interpreter for the guardian: stdio servers may outlive a killed process")
            return self
        try:
            proc = subprocess.Popen([python, "-S", "-E", "-c", GUARD_CODE], stdin=subprocess.PIPE,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, bufsize=0,
                                    start_new_session=True)
        except OSError as exc:
            log.warning("no guardian process (%s): stdio servers may outlive a killed process", exc)
            return self
        assert proc.stdin is not None
        fd = proc.stdin.fileno()
        os.set_blocking(fd, False)
        with self._lock:
            self._proc, self._fd = proc, fd
        return self

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._proc.pid if self._proc is not None else None

    def watch(self, pgid: int) -> None:
        self._tell(b"+%d\n" % pgid)

    def forget(self, pgid: int) -> None:
        self._tell(b"-%d\n" % pgid)

    def _tell(self, line: bytes) -> None:
        with self._lock:
            if self._fd is None or self._closed:
                return
            try:
                os.write(self._fd, line)  # a few bytes into a pipe the guardian drains
                return
            except OSError as exc:
                reason = exc
        log.warning("the guardian process is gone (%s): stdio servers may outlive a killed process", reason)

    def close(self) -> None:
        """End the guardian (it ends any group still listed). Blocks up to
        ``GUARD_EXIT_WAIT_S`` plus its grace."""
        with self._lock:
            self._closed = True
            proc, self._proc, self._fd = self._proc, None, None
        if proc is None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(GUARD_EXIT_WAIT_S + GUARD_TERM_WAIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(GUARD_EXIT_WAIT_S)

    def abandon(self) -> None:
        """In a child forked from the owner: let go of the owner's guardian without ending
        anything, closing this copy of its pipe (else the guardian would not see the owner's
        end while the child lives)."""
        self._lock = threading.Lock()  # (the copy of a lock another thread may have held)
        proc, self._proc, self._fd, self._closed = self._proc, None, None, True
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()


# Guards _shared: the one guardian of every Client's stdio servers in this process,
# started by the first of them and closed at the interpreter's exit. A forked child lets
# go of its parent's (``_after_fork_in_child``) and starts its own when it needs one.
_shared_lock = threading.Lock()
_shared: Guardian | None = None


def _after_fork_in_child() -> None:
    global _shared, _shared_lock
    _shared_lock = threading.Lock()
    inherited, _shared = _shared, None
    if inherited is not None:
        inherited.abandon()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def shared_guardian() -> Guardian:
    """The guardian of the stdio servers that ``mcpsync.Client`` starts (one per process,
    started on first use; a Client that closes properly forgets its group itself)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Guardian().start()
            atexit.register(_shared.close)
        return _shared


def group_alive(pgid: int) -> bool:
    """Whether any process of the group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # there is one, not ours to signal
    return True


def _python() -> str | None:
    """The interpreter to run the guardian: ours, unless we are embedded in a program that
    is not one (``sys.executable`` is then that program), else python3 from PATH."""
    name = os.path.basename(sys.executable or "").lower()
    if name.startswith(("python", "pypy")):
        return sys.executable
    return shutil.which("python3")


def open_pidfd(pid: int) -> int | None:
    """A pidfd for ``pid`` (readable once it exits), or None where there are none."""
    opener: Any = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def pipe_holders(root: int, fd: int) -> list[int]:
    """Linux: the processes under ``root`` (not ``root`` itself) whose stdout is the pipe
    whose read end is our ``fd``; [] where /proc cannot tell."""
    try:
        target = f"pipe:[{os.fstat(fd).st_ino}]"
    except OSError:
        return []
    found: list[int] = []
    todo, seen = [root], {root}
    while todo and len(seen) < MAX_WALK:
        pid = todo.pop()
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                    children = [int(c) for c in f.read().split()]
            except (OSError, ValueError):
                continue
            for child in children:
                if child in seen:
                    continue
                seen.add(child)
                todo.append(child)
                try:
                    if os.readlink(f"/proc/{child}/fd/1") == target:
                        found.append(child)
                except OSError:
                    pass
    return found


class ProcessWatch:
    """What the stdout reader of one child watches besides the pipe: the child's exit and,
    once the server has spoken, the servers under a wrapper. One owner (that reader)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.child_fd = open_pidfd(proc.pid)
        self.servers: dict[int, int] = {}     # pidfd -> pid of a server under the child
        self._looked = False

    @property
    def timeout_s(self) -> float | None:
        """How long the reader may wait for its descriptors (None: events say it all)."""
        return None if self.child_fd is not None else PROCESS_CHECK_S

    def fds(self) -> list[int]:
        return ([self.child_fd] if self.child_fd is not None else []) + list(self.servers)

    def discover(self, stdout_fd: int) -> list[int]:
        """After the first message: remember the processes under the child that hold our
        pipe (the real server behind a wrapper). Returns their new pidfds."""
        if self._looked or self.child_fd is None:
            return []
        self._looked = True
        added = []
        for pid in pipe_holders(self.proc.pid, stdout_fd):
            pfd = open_pidfd(pid)
            if pfd is not None:
                self.servers[pfd] = pid
                added.append(pfd)
        if added:
            log.debug("pid %d: watching the server(s) under it: %s", self.proc.pid, list(self.servers.values()))
        return added

    def check(self, ready: set[int]) -> tuple[str | None, list[int], list[int]]:
        """After a wait: (why the upstream is gone, or None; the pids of the last watched
        processes under the child if they just all ended; pidfds no longer to wait on)."""
        done = [fd for fd in self.servers if fd in ready]
        pids = [self.servers.pop(fd) for fd in done]
        for fd in done:
            os.close(fd)
        if (self.child_fd is not None and self.child_fd in ready) or (
                self.child_fd is None and self.proc.poll() is not None):
            return describe_exit(self.proc.poll()) + " (something it started still holds its stdout)", [], done
        return None, pids if pids and not self.servers else [], done

    def close(self) -> None:
        for fd in self.fds():
            os.close(fd)
        self.child_fd = None
        self.servers.clear()
