"""`python -m mcpsync` as a real subprocess on an ephemeral port, for end-to-end tests."""
from __future__ import annotations

import contextlib
import re
import subprocess
import sys
from typing import Iterator

STOP_TIMEOUT_S = 30


class CliServer:
    def __init__(self, proc: subprocess.Popen[str], url: str) -> None:
        self.proc = proc
        self.url = url                                   # http://127.0.0.1:PORT/mcp
        self.base = url.rsplit("/", 1)[0]                # http://127.0.0.1:PORT
        self.port = int(self.base.rsplit(":", 1)[1])
        self.returncode: int | None = None


@contextlib.contextmanager
def mcpsync_cli(*args: str, require_clean_exit: bool = True) -> Iterator[CliServer]:
    """Start `python -m mcpsync --port 0 ARGS...`, read its URL from the stderr banner, and
    stop it with SIGTERM on exit (it must exit 0 unless ``require_clean_exit`` is False)."""
    proc = subprocess.Popen([sys.executable, "-m", "mcpsync", "--port", "0", "--log-level", "WARNING", *args],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/mcp)", line)
        assert match, f"no URL in the banner: {line!r}"
        server = CliServer(proc, match.group(1))
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)
        if proc.stderr is not None:
            proc.stderr.close()
    if require_clean_exit:
        assert proc.returncode == 0, f"python -m mcpsync exited {proc.returncode} on SIGTERM"
