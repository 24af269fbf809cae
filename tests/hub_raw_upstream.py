"""A raw stdio upstream for the hub's robustness tests: plain JSON-RPC lines, no mcpsync, so
it can misbehave in ways a real server framework would not let it.

``python hub_raw_upstream.py serve`` answers initialize (revision 2025-11-25), tools/list
(``echo``, ``roots_answer``), tools/call and ping. Environment variables make it misbehave:

* ``RAW_PID_DIR``: write ``<role>.pid`` there at start (role: ``server`` or ``wrapper``)
* ``RAW_STDERR_BYTES=N``: first write one stderr line of N bytes, then exit with status 1
* ``RAW_STDERR_LINES="a|b"`` with ``RAW_EXIT=N``: write those stderr lines, exit with N
* ``RAW_FLOOD=text`` or ``json``: write lines that are not JSON-RPC (text, or a JSON
  logger's lines) to stdout as fast as the pipe takes them
* ``RAW_SILENT=1``: read stdin, never answer
* ``RAW_DEAF=1``: after answering tools/list, never read stdin again
* ``RAW_STUBBORN=1``: ignore SIGTERM and the end of stdin (only SIGKILL ends it)
* ``RAW_ASK_ROOTS=1``: after notifications/initialized, ask the hub for roots/list and keep
  the answer (the ``roots_answer`` tool returns it)
* ``RAW_HELPER=1``: start a helper process that shares stdout (role ``helper``; it waits
  for a signal)

``python hub_raw_upstream.py wrapper`` is an npx-like wrapper: it starts ``serve`` as its
child with the same stdin/stdout/stderr and then lingers, holding them, whatever happens
to the child (it ignores SIGTERM too).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

CHUNK = 1024 * 1024


def write_pid(role: str) -> None:
    where = os.environ.get("RAW_PID_DIR")
    if where:
        tmp = os.path.join(where, f".{role}.pid")
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, os.path.join(where, f"{role}.pid"))


def forever() -> None:
    threading.Event().wait()


def send(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def serve() -> None:
    write_pid("server")
    env = os.environ
    if env.get("RAW_STUBBORN"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if env.get("RAW_STDERR_BYTES"):
        left = int(env["RAW_STDERR_BYTES"])
        os.write(2, b"BIG:")
        while left > 0:
            n = min(CHUNK, left)
            os.write(2, b"x" * n)
            left -= n
        os.write(2, b"\n")
        sys.exit(1)
    if env.get("RAW_STDERR_LINES"):
        for line in env["RAW_STDERR_LINES"].split("|"):
            print(line, file=sys.stderr, flush=True)
        sys.exit(int(env.get("RAW_EXIT", "1")))
    if env.get("RAW_HELPER"):
        subprocess.Popen([sys.executable, os.path.abspath(__file__), "helper"], stdin=subprocess.DEVNULL)
    if env.get("RAW_FLOOD"):
        junk = (b'{"level": "info", "msg": "a JSON logger on the wrong stream"}\n' if env["RAW_FLOOD"] == "json"
                else b"this is not JSON, just a server logging to the wrong stream\n") * 1000
        while True:
            os.write(1, junk)
    roots_answer: list[Any] = []
    for line in sys.stdin:
        if env.get("RAW_SILENT"):
            continue
        msg = json.loads(line)
        method, rid = msg.get("method"), msg.get("id")
        if method is None:  # a response: the hub's answer to our roots/list
            roots_answer.append(msg)
            continue
        if method == "notifications/initialized" and env.get("RAW_ASK_ROOTS"):
            send({"jsonrpc": "2.0", "id": "roots-1", "method": "roots/list"})
        if rid is None:
            continue
        if method == "initialize":
            result: Any = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                           "serverInfo": {"name": "raw", "version": "1"}}
        elif method == "tools/list":
            schema = {"type": "object", "properties": {"text": {"type": "string"}}}
            result = {"tools": [{"name": "echo", "inputSchema": schema},
                                {"name": "roots_answer", "inputSchema": {"type": "object"}}]}
        elif method == "tools/call":
            name = msg["params"]["name"]
            text = (msg["params"].get("arguments") or {}).get("text", "") if name == "echo" else json.dumps(roots_answer)
            result = {"content": [{"type": "text", "text": text}]}
        elif method == "ping":
            result = {}
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"no {method}"}})
            continue
        send({"jsonrpc": "2.0", "id": rid, "result": result})
        if method == "tools/list" and env.get("RAW_DEAF"):
            forever()
    if env.get("RAW_STUBBORN"):
        forever()


def wrapper() -> None:
    write_pid("wrapper")
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve"])
    child.wait()
    forever()  # linger, holding stdin/stdout/stderr, like a wrapper that does not notice


def helper() -> None:
    write_pid("helper")
    forever()


if __name__ == "__main__":
    {"serve": serve, "wrapper": wrapper, "helper": helper}[sys.argv[1] if len(sys.argv) > 1 else "serve"]()
