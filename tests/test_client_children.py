"""A stdio server started by ``mcpsync.Client`` never outlives the program that started it,
however that program ends (SIGKILL included): the same guardian process the hub uses watches
every stdio server a Client starts. The server here is tests/hub_raw_upstream.py in its
stubborn mode (it ignores both the end of its stdin and SIGTERM). Every wait is bounded."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

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
