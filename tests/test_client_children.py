"""A stdio server started by ``mcpsync.Client`` never outlives the program that started it,
however that program ends (SIGKILL included): the same guardian process the hub uses watches
every stdio server a Client starts. The server here is tests/hub_raw_upstream.py in its
stubborn mode (it ignores both the end of its stdin and SIGTERM). Every wait is bounded."""
from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest
from hubutil import RAW, kill_leftovers, process_gone, read_pid  # noqa: F401 (fixture)
from rpcutil import wait_until

REPO = pathlib.Path(__file__).resolve().parent.parent
WAIT_S = 20.0

PROGRAM = """
import sys, threading
from mcpsync import Client
client = Client([sys.executable, {raw!r}, "serve"], revision="2025-11-25",
                env={{"RAW_STUBBORN": "1", "RAW_PID_DIR": {pids!r}}})
print([t.name for t in client.list_tools()], flush=True)
threading.Event().wait()  # until killed
"""


def test_a_stdio_server_dies_with_a_killed_client_program(tmp_path: pathlib.Path,
                                                           kill_leftovers: list[int]) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    program = subprocess.Popen([sys.executable, "-c", PROGRAM.format(raw=RAW, pids=str(tmp_path))],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    kill_leftovers.append(program.pid)
    try:
        assert program.stdout is not None
        assert "echo" in program.stdout.readline()  # connected and served
        server = read_pid(tmp_path, "server", WAIT_S)
        kill_leftovers.append(server)
        program.kill()
        program.wait(WAIT_S)
        assert wait_until(lambda: process_gone(server), 10.0), "the stdio server outlived its client"
    finally:
        program.kill()
        program.wait(WAIT_S)
        if program.stdout is not None:
            program.stdout.close()


FORKING = """
import os
from mcpsync.client import process
guardian = process.shared_guardian()
proc = guardian._proc
r, w = os.pipe()
pid = os.fork()
if pid == 0:  # the child holds what it inherited until the parent is done
    os.close(w)
    os.read(r, 1)
    os._exit(0)
os.close(r)
guardian.close()
print(proc.returncode, flush=True)
os.close(w)
os.waitpid(pid, 0)
"""


def test_a_forked_child_does_not_hold_the_guardian_open() -> None:
    """After a fork the child lets go of the parent's guardian: the parent's close still
    ends it at once (it saw its stdin's end), instead of killing it after its timeouts."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", FORKING], env=env, capture_output=True, text=True,
                          timeout=WAIT_S)
    assert done.stdout.strip() == "0", (done.stdout, done.stderr[-2000:])


def test_a_server_that_ends_on_its_own_is_forgotten_by_the_guardian(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, kill_leftovers: list[int]) -> None:
    """A stdio server whose process group is gone is struck off the guardian's list at
    once (its number may be reused by another group by the time the program ends)."""
    from mcpsync import Client
    from mcpsync.client import process

    class Recording(process.Guardian):
        def __init__(self) -> None:
            super().__init__()
            self.forgotten: list[int] = []

        def forget(self, pgid: int) -> None:
            self.forgotten.append(pgid)
            super().forget(pgid)
    guardian = Recording().start()
    monkeypatch.setattr(process, "_shared", guardian)
    try:
        client = Client([sys.executable, RAW, "serve"], revision="2025-11-25",
                        env={"RAW_PID_DIR": str(tmp_path)})
        try:
            server = read_pid(tmp_path, "server", WAIT_S)
            kill_leftovers.append(server)
            os.kill(server, signal.SIGKILL)
            assert wait_until(lambda: server in guardian.forgotten, WAIT_S), guardian.forgotten
        finally:
            client.close()
    finally:
        guardian.close()
