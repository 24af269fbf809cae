"""Test-only system programs (redis-server, haproxy, nginx from Debian's packages), installed
on first use with apt-get when missing and this process may (root), like ``jsdeps`` does
for Node. With ``CI=true`` a program that cannot be had fails the test instead of skipping it.

The packages' own services are never started: the install runs behind a temporary
``policy-rc.d`` that denies service starts (the Debian convention for containers), and each
test starts the programs it needs itself, on ephemeral ports in a temp dir.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import threading

import pytest

#: program -> Debian package that ships it
PACKAGES = {"redis-server": "redis-server", "haproxy": "haproxy", "nginx": "nginx"}
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
APT_TIMEOUT_S = 600
POLICY_RC_D = pathlib.Path("/usr/sbin/policy-rc.d")
_install_lock = threading.Lock()  # one installer per test process


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _which(program: str) -> str | None:
    found = shutil.which(program)
    if found:
        return found
    for d in SBIN:
        candidate = os.path.join(d, program)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI=true: these tests never skip)")
    pytest.skip(reason)


def _apt_install(packages: list[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    placed = False
    if not POLICY_RC_D.exists():  # deny service starts during the install (exit 101)
        POLICY_RC_D.write_text("#!/bin/sh\nexit 101\n")
        POLICY_RC_D.chmod(0o755)
        placed = True
    try:
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        if proc.returncode != 0:  # the package lists may be missing on a fresh machine
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True,
                           text=True, timeout=APT_TIMEOUT_S)
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S)
        if proc.returncode != 0:
            pytest.fail(f"apt-get install {' '.join(packages)} failed:\n{proc.stdout[-2000:]}\n"
                        f"{proc.stderr[-2000:]}")
    finally:
        if placed:
            POLICY_RC_D.unlink()


def require(*programs: str) -> dict[str, str]:
    """The paths of ``programs`` (keys of ``PACKAGES``), installing the missing ones when
    running as root with apt-get; otherwise skip (fail under CI)."""
    with _install_lock:
        missing = [p for p in programs if _which(p) is None]
        if missing:
            if os.geteuid() != 0 or shutil.which("apt-get") is None:
                _unavailable(f"{', '.join(missing)} not installed (needs root and apt-get to "
                             "install: apt-get install " + " ".join(PACKAGES[p] for p in missing) + ")")
            _apt_install(sorted({PACKAGES[p] for p in missing}))
        paths = {}
        for p in programs:
            path = _which(p)
            if path is None:
                _unavailable(f"{p} is still missing after installing {PACKAGES[p]}")
            assert path is not None
            paths[p] = path
        return paths
