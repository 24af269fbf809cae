"""``KeyRing``: the keys that seal ``requestState`` and sign task ids, shared by every
instance of a deployment, several at once for rotation.

Theory of operation
-------------------
A 2026-07-28 multi round-trip request may be retried on another instance than the one that
sealed its ``requestState``, so every instance must hold the same key. It comes from
``MCPSYNC_SECRET`` (or ``--secret-file``): one or more secrets separated by commas, spaces
or new lines; the first seals and signs, every one opens and verifies, so a new secret is
rolled out by putting it first on every instance (states sealed with the old one keep
opening until it is removed, at most ``STATE_TTL_S`` later). Without a configured secret
the shared state backend holds one (``StateBackend.shared_key``), and without a backend
each process makes its own, as before.

Each secret is never used directly: a key per purpose is derived from it
(HMAC-SHA256(secret, purpose)), so a sealed state and a task id never share a key.

Task ids are ``<43 random url-safe characters>.<22-character MAC>``: an instance refuses an
id it did not sign (an id made up by a client, or one of another deployment) without asking
the store, so guessing ids costs the backend nothing.

Thread-safety: the key tuple is replaced whole (``adopt``), readers take it once.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Callable, Sequence

from ..errors import ConfigError

MIN_SECRET_CHARS = 32        # a configured secret: at least this many characters
MAX_KEYS = 8                 # keys kept (the sealing one and those that still open)
TASK_ID_RANDOM_BYTES = 32    # 256 random bits per task id
TASK_ID_MAC_CHARS = 22       # 128 bits of HMAC-SHA256, url-safe base64
SEAL_PURPOSE = b"mcpsync requestState v1"
TASK_ID_PURPOSE = b"mcpsync task id v1"
_SPLIT = re.compile(r"[\s,]+")


def parse_secrets(text: str, *, source: str = "MCPSYNC_SECRET") -> list[bytes]:
    """The secrets in ``text`` (first one first); ``ConfigError`` if there is none or one is
    too short. Lines starting with ``#`` are comments."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    found = [s for s in _SPLIT.split("\n".join(lines)) if s]
    if not found:
        raise ConfigError(source, "no secret in it")
    for s in found:
        if len(s) < MIN_SECRET_CHARS:
            raise ConfigError(source, f"a secret must be at least {MIN_SECRET_CHARS} characters "
                                      "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return [s.encode() for s in found]


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return hmac.new(secret, purpose, hashlib.sha256).digest()


def _mac(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode()[:TASK_ID_MAC_CHARS]


class KeyRing:
    """The secrets in force, the current one first. ``on_change`` callbacks run after
    ``adopt`` put a new secret first (the sealer is rebuilt there)."""

    def __init__(self, secrets_: Sequence[bytes]) -> None:
        if not secrets_:
            raise ValueError("a key ring needs at least one secret")
        self._listeners: list[Callable[[], None]] = []
        self._set(tuple(secrets_)[:MAX_KEYS])

    def _set(self, held: tuple[bytes, ...]) -> None:
        # The secrets and the keys derived from them, swapped as one tuple (readers take it once).
        self._keys = (held, tuple(_derive(s, SEAL_PURPOSE) for s in held),
                      tuple(_derive(s, TASK_ID_PURPOSE) for s in held))

    @property
    def current(self) -> bytes:
        return self._keys[0][0]

    def adopt(self, secret: bytes) -> bool:
        """Make ``secret`` the current one (the others still open, the oldest dropped past
        ``MAX_KEYS``). False if it already was current."""
        held = self._keys[0]
        if held[0] == secret:
            return False
        self._set(((secret,) + tuple(s for s in held if s != secret))[:MAX_KEYS])
        for callback in list(self._listeners):
            callback()
        return True

    def on_change(self, callback: Callable[[], None]) -> None:
        self._listeners.append(callback)

    def sealing_keys(self) -> tuple[bytes, ...]:
        """Keys for ``StateSealer``: the first seals, all open."""
        return self._keys[1]

    def new_task_id(self) -> str:
        random_part = secrets.token_urlsafe(TASK_ID_RANDOM_BYTES)
        return f"{random_part}.{_mac(self._keys[2][0], random_part)}"

    def check_task_id(self, task_id: str) -> bool:
        """Whether ``task_id`` was signed with one of the keys in force."""
        random_part, dot, mac = task_id.partition(".")
        if not dot or len(mac) != TASK_ID_MAC_CHARS:
            return False
        return any(hmac.compare_digest(mac, _mac(key, random_part)) for key in self._keys[2])
