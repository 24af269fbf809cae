"""The two protocol eras' cost in instructions, for ``scripts/bench.py`` (scenario ``eras``).

``echo-8`` and ``stateless-8`` compare the eras in requests per second, which on a shared
machine drift by more than the eras differ. Here the server runs under valgrind's callgrind
and the same two wrk loads (a session's echo, the 2026-07-28 echo) are counted in the
instructions the server process executes per request, all its threads together: a count
that does not depend on what else the machine is doing (to a percent or so: thread
interleaving varies). Kernel time (system calls, context switches) is not in it; both eras
make the same system calls per request.

Callgrind slows the server some fifty times, so each measurement is a few thousand
requests. The counters are zeroed after a warm-up of both loads and dumped after each
measurement (``callgrind_control``), which also zeroes them. Needs valgrind and wrk; the
scenario is left out with a note without them.
"""
from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

STARTUP_TIMEOUT_S = 120.0   # the server prints its URL within this under callgrind
WARMUP_S = 2.0              # each load once before the counters are zeroed
MEASURE_S = 8.0             # each measured wrk run (~50× slower: a few thousand requests)
CONTROL_TIMEOUT_S = 60.0    # callgrind_control's dump of a busy process
PROGRAMS = ("valgrind", "callgrind_control", "wrk")


def missing_programs() -> list[str]:
    return [p for p in PROGRAMS if shutil.which(p) is None]


def under_callgrind(argv: list[str], out_dir: pathlib.Path) -> list[str]:
    """``argv`` run under callgrind, its dumps in ``out_dir`` (created)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/callgrind.out.%p", *argv]


def zero(pid: int) -> None:
    """Zero the counters of the callgrind process ``pid``. Blocks CONTROL_TIMEOUT_S at most."""
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True,
                   timeout=CONTROL_TIMEOUT_S)


def dump(pid: int, out_dir: pathlib.Path, label: str) -> int:
    """Dump (and so zero) the counters of ``pid``; the instructions counted since the last
    zero or dump. Blocks CONTROL_TIMEOUT_S at most."""
    before = set(out_dir.glob("callgrind.out.*"))
    subprocess.run(["callgrind_control", "-d", label, str(pid)], check=True, capture_output=True,
                   timeout=CONTROL_TIMEOUT_S)
    new = sorted(set(out_dir.glob("callgrind.out.*")) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        raise RuntimeError("callgrind wrote no dump")
    text = new[-1].read_text(errors="replace")
    found = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
    if found is None:
        raise RuntimeError(f"no instruction total in {new[-1].name}")
    new[-1].unlink()  # a dump is tens of MiB of per-function detail: only the total is kept
    return int(found.group(1))
