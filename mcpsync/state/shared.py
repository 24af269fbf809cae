"""``SharedState``: one process's membership of a deployment (``--state-url``,
``MCPSYNC_SECRET``, ``--instance-id``), and how it is attached to a ``Server``.

``attach(server)`` (called by ``Service``, before serving) puts the shared pieces in place
of the process-local ones, each through a hook of its own:

=====================  ==========================================================
``server._sealer``     a ``StateSealer`` over the key ring (rebuilt when it changes)
``server.tasks``       a ``TaskManager`` over the backend's tasks store, with this
                       instance's id as owner and signed task ids (its settings are
                       carried over from the manager it replaces)
``server.publish``     the notification bus
session ids            ``Service`` gives its ``SessionStore`` the ``session_prefix``
=====================  ==========================================================

Keys: with a configured secret the key ring is fixed. Without one the ring starts with a
key of this process, and the backend's shared key is adopted as soon as the backend
answers (at attach, else on the backend's periodic tick), then checked every
``KEY_CHECK_S``: a backend that lost it (Redis restarted empty) gets ours back.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import time
from typing import TYPE_CHECKING, Mapping
from urllib.parse import urlsplit

from ..errors import ConfigError
from ..protocol.modern import StateSealer
from ..tasks import TaskManager
from .backend import MemoryBackend, StateBackend, StateUnavailable, random_key
from .bus import NotificationBus
from .keyring import KeyRing, parse_secrets

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("mcpsync.state")

KEY_CHECK_S = 30.0   # how often a process checks that the backend still holds the shared key
INSTANCE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
REDIS_SCHEMES = ("redis", "rediss", "unix")


class SharedState:
    """What this process shares with the other instances. ``backend`` defaults to memory
    (nothing is shared: one instance); ``keys`` to a key of this process (or the backend's
    shared one); ``instance_id`` to a random id that prefixes nothing."""

    def __init__(self, backend: StateBackend | None = None, *, keys: KeyRing | None = None,
                 instance_id: str | None = None) -> None:
        if instance_id is not None and not INSTANCE_ID_RE.match(instance_id):
            raise ConfigError("--instance-id", "use 1 to 32 letters, digits, '-' or '_'")
        self.backend: StateBackend = backend if backend is not None else MemoryBackend()
        self.keys_configured = keys is not None
        self.keys = keys if keys is not None else KeyRing([random_key()])
        self.instance_id = instance_id
        # This process among the instances (bus messages, task owner): unique even when two
        # processes are given one name (gunicorn workers, a copied command line), or each
        # would take the other's messages for its own.
        self.instance = f"{instance_id or 'mcpsync'}-{secrets.token_hex(4)}"
        # "NAME." before every session id, so a balancer can route a session by its id
        # (nginx map); a session id never contains "." otherwise.
        self.session_prefix = f"{instance_id}." if instance_id else ""
        self.bus: NotificationBus | None = None
        self._server: Server | None = None
        self._key_synced = self.keys_configured
        self._key_warned = False  # the "own key until the backend answers" warning was logged
        self._key_checked = 0.0  # monotonic time of the last check (the backend's thread only)

    @classmethod
    def from_config(cls, url: str | None = None, *, secret: str | None = None,
                    secret_source: str = "MCPSYNC_SECRET",
                    instance_id: str | None = None) -> "SharedState":
        """From the command line's values: ``url`` (``redis://HOST:PORT/DB``, ``rediss://``,
        ``unix://PATH``, ``memory://`` or None), the text of ``MCPSYNC_SECRET`` or of the
        secret file, and ``--instance-id``. ``ConfigError`` for a bad value."""
        backend: StateBackend | None = None
        if url:
            scheme = urlsplit(url).scheme.lower()
            if scheme in REDIS_SCHEMES:
                from .redis_backend import RedisBackend
                backend = RedisBackend(url)
            elif scheme != "memory":
                raise ConfigError("--state-url", f"unknown scheme {scheme!r}: use redis://HOST:PORT/DB, "
                                                 "rediss://, unix://PATH or memory://")
        keys = KeyRing(parse_secrets(secret, source=secret_source)) if secret is not None else None
        return cls(backend, keys=keys, instance_id=instance_id)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "SharedState | None":
        """From ``MCPSYNC_STATE_URL``, ``MCPSYNC_SECRET`` (or ``MCPSYNC_SECRET_FILE``, which
        wins) and ``MCPSYNC_INSTANCE_ID``; None when none is set (one instance, nothing
        shared). ``ConfigError`` for a bad value or an unreadable secret file."""
        env = os.environ if environ is None else environ
        url = env.get("MCPSYNC_STATE_URL") or None
        instance_id = env.get("MCPSYNC_INSTANCE_ID") or None
        secret, source = env.get("MCPSYNC_SECRET") or None, "MCPSYNC_SECRET"
        path = env.get("MCPSYNC_SECRET_FILE") or None
        if path is not None:
            source = path
            try:
                with open(path, encoding="utf-8") as f:
                    secret = f.read()
            except OSError as exc:
                raise ConfigError("--secret-file", f"{exc.strerror or exc}: {path}") from None
        if url is None and secret is None and instance_id is None:
            return None
        return cls.from_config(url, secret=secret, secret_source=source, instance_id=instance_id)

    # ---- attaching ------------------------------------------------------------------------

    def attach(self, server: "Server") -> None:
        """Join the deployment: the backend's tasks store, the shared keys and the bus
        replace ``server``'s own. Call once, before the server serves anything."""
        if self._server is not None:
            raise RuntimeError("this SharedState is attached to a server already")
        self._server = server
        self.backend.start()
        if not self.keys_configured:
            self._sync_key()
            self.backend.every_tick(self._key_tick)
        old = server.tasks
        store = self.backend.task_store(self.instance)
        server.tasks = TaskManager(server, store=store,
                                   clock=old.clock, threads=old.pool.size, ttl_ms=old.ttl_ms,
                                   poll_interval_ms=old.poll_interval_ms,
                                   max_per_principal=old.max_per_principal, max_tasks=old.max_tasks,
                                   instance=self.instance, new_id=self.keys.new_task_id,
                                   check_id=self.keys.check_task_id)
        if hasattr(store, "alive"):  # a store with leases renews only what this process runs
            store.alive = server.tasks.running_ids
        self._reseal()
        self.keys.on_change(self._reseal)
        self.bus = NotificationBus(server, self.backend, self.instance)
        self.bus.attach()
        log.info("shared state: instance %s on %s", self.instance, self.backend.name)

    def _reseal(self) -> None:
        if self._server is not None:
            self._server._sealer = StateSealer(self.keys.sealing_keys())

    def _sync_key(self) -> None:
        try:
            shared = self.backend.shared_key(self.keys.current)
        except StateUnavailable:
            if not self._key_synced and not self._key_warned:
                self._key_warned = True
                log.warning("shared state: %s is out of reach, so this instance seals "
                            "requestState with a key of its own until it answers", self.backend.name)
            return
        finally:
            self._key_checked = time.monotonic()
        if self.keys.adopt(shared):
            log.info("shared state: adopted the deployment's shared key")
        self._key_synced = True

    def _key_tick(self) -> None:
        if not self._key_synced or time.monotonic() - self._key_checked >= KEY_CHECK_S:
            self._sync_key()

    # ---- status and end -------------------------------------------------------------------

    def healthy(self) -> bool:
        return self.backend.healthy()

    def close(self) -> None:
        """Stop the backend's threads (after the server's tasks were closed)."""
        self.backend.close()
