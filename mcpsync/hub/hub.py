"""``Hub``: many upstream MCP servers behind one ``Server``.

Theory of operation
-------------------
The hub is an ordinary mcpsync ``Server`` (so it is served over every transport) whose
registry holds proxies for the upstreams' tools, prompts and resources (``aggregate.py``),
kept current by one ``Upstream`` supervisor per configured server (``upstream.py``).

Two more threads, both owned and joined by ``close()``:

* ``mcpsync-hub-watcher`` reloads the configuration: when the file's mtime, size or inode
  changes (polled every ``hub.watchInterval`` seconds, an ``Event``-style condition wait
  that ``close`` and ``request_reload`` end early), on SIGHUP (``request_reload``, which a
  signal handler may call), or when ``reload()`` is called. Only upstreams whose settings
  changed are restarted; removed ones stop and their names disappear; added ones start.
  All reloads run on this one thread, so they never overlap.
* ``mcpsync-hub-reaper`` closes upstream sessions that are no longer wanted (a per-session
  upstream whose downstream session ended, a dead instance, a sessionless request's own
  upstream) off the thread that noticed, and sweeps for leaked ones now and then.

``Hub._cond`` (an RLock condition, so ``request_reload`` is safe from a signal handler on
the main thread) guards the upstream map (replaced whole by a reload), the change counter
behind ``wait_until``, and the reload bookkeeping; every proxied request takes it once,
for its upstream's lookup (``Router.forward`` → ``upstream``). ``Hub._reap_cond`` guards
the reaper's queue. Neither is held across I/O; lock order: an upstream's own lock is
never taken while either is held, except for reading health, which takes them one at a
time.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from typing import Any, Callable

from .._version import __version__
from ..client.channels import Channel, make_channel
from ..client.process import Guardian
from ..client.session import ClientSession
from ..core.connection import ServerConnection
from ..errors import ConfigError
from ..server import Server
from .config import HubConfig, UpstreamConfig, load_config
from .router import Router
from .upstream import BACKOFF, CONNECTING, DISABLED, FAILED, READY, Upstream

log = logging.getLogger("mcpsync.hub")

REAP_SWEEP_S = 30.0         # how often the reaper looks for leaked per-session upstreams
CLOSE_JOIN_S = 15.0         # bound for each hub thread to finish on close
RELOAD_WAIT_S = 60.0        # default bound of reload()


class HubServer(Server):
    """The hub's server: what it declares is what it can do (H-02): list changes are
    forwarded, resource subscriptions are not (yet) passed upstream."""

    draining = False   # set once, when the front end starts its shutdown (end_listeners)

    def end_listeners(self, conn: ServerConnection | None = None) -> None:
        """The front end's shutdown begins here (``HttpApp.end_streams``, every stream): from
        now on the hub's ``/readyz`` answers 503."""
        if conn is None:
            self.draining = True
        super().end_listeners(conn)

    def capabilities(self, version: str | None = None) -> dict[str, Any]:
        caps = super().capabilities(version)
        caps["resources"] = {"listChanged": True}
        return caps


class Hub:
    """Aggregates the upstreams of a ``HubConfig``. ``start()`` returns at once (upstreams
    connect in the background; ``wait_ready`` waits for their first attempt)."""

    def __init__(self, config: HubConfig, *, config_path: str | None = None,
                 server: Server | None = None,
                 channel_factory: Callable[[UpstreamConfig], Channel] | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.server = server if server is not None else HubServer(
            config.name, __version__,
            description="An mcpsync hub: the tools, prompts and resources of several MCP servers",
            instructions=f"Names are <server>{config.separator}<name>: each tool, prompt and "
                         "resource belongs to the upstream server its prefix names.")
        # Ends the stdio upstreams' process groups if the hub dies (process.py).
        self._guardian = Guardian()
        self._channel_factory = channel_factory or (lambda cfg: make_channel(cfg, self._guardian))
        self.started_at = time.monotonic()
        # Guards _upstreams, _version, the reload fields and _closing; see the module docstring.
        self._cond = threading.Condition(threading.RLock())
        self._upstreams: dict[str, Upstream] = {}
        self.router = Router(self.upstream)   # proxies reach the current Upstream of a name
        self._version = 0
        self._reload_want = 0
        self._reload_done = 0
        self._reload_config: HubConfig | None = None
        self._reload_result: dict[str, Any] = {}
        self.reloads = 0
        self.last_reload_error: str | None = None
        self._closing = False
        # Guards _reap_queue; notified when something is queued and on close.
        self._reap_cond = threading.Condition(threading.Lock())
        self._reap_queue: deque[ClientSession] = deque()
        self._threads: list[threading.Thread] = []
        self._started = False
        self.server.on_session_closed(self._session_closed)

    # ---- life ------------------------------------------------------------------------------

    def start(self) -> "Hub":
        with self._cond:
            if self._started:
                return self
            self._started = True
            ups = {name: self._make(cfg) for name, cfg in self.config.upstreams.items()}
            self._upstreams = ups
        self._guardian.start()
        for up in ups.values():
            up.start()
        for role, target in (("watcher", self._watch), ("reaper", self._reaper)):
            t = threading.Thread(target=target, name=f"mcpsync-hub-{role}", daemon=True)
            self._threads.append(t)
            t.start()
        log.info("hub: %d upstream(s): %s", len(ups), ", ".join(ups) or "none")
        return self

    def _make(self, cfg: UpstreamConfig) -> Upstream:
        return Upstream(cfg, self.server, reap=self._reap, forward=self.router.forward,
                        on_change=self._changed, channel_factory=self._channel_factory)

    def close(self) -> None:
        """Stop every upstream (their processes exit, sessions close) and join the hub's
        threads. Blocks, bounded by the shutdown timeouts."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            ups = list(self._upstreams.values())
            self._cond.notify_all()
        with self._reap_cond:
            self._reap_cond.notify_all()
        stoppers = [threading.Thread(target=up.stop, kwargs={"unregister": False},
                                     name=f"mcpsync-hub-stopper-{up.name}", daemon=True) for up in ups]
        for t in stoppers:
            t.start()
        for t in stoppers + self._threads:
            t.join(CLOSE_JOIN_S)
            if t.is_alive():
                log.warning("hub: thread %s did not stop in time", t.name)
        self._drain_reaper()
        self._guardian.close()
        self._changed()

    def __enter__(self) -> "Hub":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- routing ---------------------------------------------------------------------------

    def upstream(self, name: str) -> Upstream | None:
        with self._cond:
            return self._upstreams.get(name)

    def upstreams(self) -> dict[str, Upstream]:
        with self._cond:
            return dict(self._upstreams)

    def _session_closed(self, conn: ServerConnection) -> None:
        for up in self.upstreams().values():
            up.drop_connection(conn)

    # ---- change notification -------------------------------------------------------------

    def _changed(self) -> None:
        with self._cond:
            self._version += 1
            self._cond.notify_all()

    def wait_until(self, predicate: Callable[["Hub"], bool], timeout: float) -> bool:
        """Block until ``predicate(hub)`` holds (re-checked on every state change), up to
        ``timeout`` seconds. The predicate runs with no hub lock held."""
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                seen = self._version
            if predicate(self):
                return True
            with self._cond:
                moved = self._cond.wait_for(lambda: self._version != seen, deadline - time.monotonic())
            if not moved:
                return predicate(self)

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every enabled upstream is ready or has failed its first attempt."""
        def settled(hub: "Hub") -> bool:
            for up in hub.upstreams().values():
                h = up.health()
                if h["state"] == CONNECTING or (h["state"] == BACKOFF and h["restarts"] == 0
                                                and h["lastError"] is None):
                    return False
                if h["state"] not in (READY, FAILED, DISABLED, BACKOFF):
                    return False
            return True
        return self.wait_until(settled, timeout)

    # ---- health ------------------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        """For ``/readyz``: ready when every enabled, required upstream is ready and the
        front end is not draining. ``waitingFor`` names the upstreams it waits for."""
        waiting: dict[str, str] = {}
        for name, up in self.upstreams().items():
            state = up.health()["state"] if up.cfg.enabled and up.cfg.required else READY
            if state != READY:
                waiting[name] = state
        with self._cond:
            closing = self._closing
        draining = closing or bool(getattr(self.server, "draining", False))
        status = "draining" if draining else "ready" if not waiting else "not ready"
        return {"status": status, "ready": status == "ready", "waitingFor": waiting}

    def health(self) -> dict[str, Any]:
        with self._cond:
            ups = dict(self._upstreams)
            closing = self._closing
            reloads, reload_error = self.reloads, self.last_reload_error
        details = {name: up.health() for name, up in ups.items()}
        enabled = [h for h in details.values() if h["enabled"]]
        if closing:
            status = "closed"
        elif all(h["state"] == READY for h in enabled):
            status = "ok"
        elif any(h["state"] == CONNECTING and h["restarts"] == 0 for h in enabled):
            status = "starting"
        else:
            status = "degraded"
        reg = self.server.registry
        return {
            "status": status,
            "hub": {"name": self.server.name, "version": __version__,
                    "uptimeS": round(time.monotonic() - self.started_at, 3),
                    "configPath": self.config_path, "separator": self.config.separator,
                    "reloads": reloads, "lastReloadError": reload_error,
                    "tools": len(reg.tools), "prompts": len(reg.prompts),
                    "resources": len(reg.resources), "resourceTemplates": len(reg.templates)},
            "upstreams": details,
        }

    # ---- reload ------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """Ask the watcher thread to re-read the config file (SIGHUP). Returns at once."""
        with self._cond:
            self._reload_want += 1
            self._cond.notify_all()

    def reload(self, config: HubConfig | None = None, timeout: float = RELOAD_WAIT_S) -> dict[str, Any]:
        """Apply ``config`` (default: re-read the file) on the watcher thread and wait for it.
        Returns what happened (``added``, ``removed``, ``restarted``, ``unchanged``, or
        ``error``). Blocks up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._closing or not self._started:
                raise RuntimeError("the hub is not running")
            self._reload_want += 1
            mine = self._reload_want
            if config is not None:
                self._reload_config = config
            self._cond.notify_all()
            if not self._cond.wait_for(lambda: self._reload_done >= mine, deadline - time.monotonic()):
                raise TimeoutError("the reload did not finish in time")
            return dict(self._reload_result)

    def _stat(self) -> tuple[int, int, int] | None:
        if self.config_path is None:
            return None
        try:
            st = os.stat(self.config_path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _watch(self) -> None:
        last = self._stat()
        while True:
            with self._cond:
                watching = self.config.watch and self.config_path is not None
                interval = self.config.watch_interval if watching else None
                self._cond.wait_for(lambda: self._closing or self._reload_want > self._reload_done, interval)
                if self._closing:
                    return
                want = self._reload_want
                requested = want > self._reload_done
                explicit, self._reload_config = self._reload_config, None
            current = self._stat()
            if not requested and (current == last or current is None):
                continue
            last = current
            try:
                result = self._apply(explicit)
            except Exception as exc:
                log.exception("hub: reload failed")
                result = {"error": f"{type(exc).__name__}: {exc}"}
            with self._cond:
                self._reload_result = result
                self._reload_done = max(self._reload_done, want)
                self._cond.notify_all()
            self._changed()

    def _apply(self, explicit: HubConfig | None) -> dict[str, Any]:
        """One reload, on the watcher thread."""
        if explicit is not None:
            new = explicit
        else:
            assert self.config_path is not None
            try:
                new = load_config(self.config_path)
            except ConfigError as exc:
                log.error("hub: config not reloaded: %s: %s", exc.key, exc.reason)
                with self._cond:
                    self.last_reload_error = f"{exc.key}: {exc.reason}"
                return {"error": f"{exc.key}: {exc.reason}"}
        old = self.config
        if new.name != old.name:
            log.warning("hub: hub.name changes take effect at the next start")
        with self._cond:
            current = dict(self._upstreams)
        removed = [n for n in current if n not in new.upstreams]
        added = [n for n in new.upstreams if n not in current]
        changed = [n for n in new.upstreams if n in current and current[n].cfg != new.upstreams[n]]
        unchanged = [n for n in new.upstreams if n in current and n not in changed]
        for name in removed + changed:
            # A restarted upstream keeps its names listed until its first refresh replaces
            # them (no flicker), unless they are about to change or it is being disabled.
            after = new.upstreams.get(name)
            keep_names = (after is not None and after.enabled and current[name].cfg.prefix == after.prefix
                          and current[name].cfg.separator == after.separator)
            current[name].stop(unregister=not keep_names)
        fresh = {name: self._make(new.upstreams[name]) for name in added + changed}
        with self._cond:
            self._upstreams = {name: fresh.get(name) or current[name] for name in new.upstreams}
            self.config = new
            self.reloads += 1
            self.last_reload_error = None
        for up in fresh.values():
            up.start()
        log.info("hub: config reloaded: added %s, removed %s, restarted %s", added or "none",
                 removed or "none", changed or "none")
        return {"added": added, "removed": removed, "restarted": changed, "unchanged": unchanged}

    # ---- the reaper ------------------------------------------------------------------------

    def _reap(self, session: ClientSession) -> None:
        with self._reap_cond:
            self._reap_queue.append(session)
            self._reap_cond.notify()

    def _reaper(self) -> None:
        while True:
            with self._reap_cond:
                self._reap_cond.wait_for(lambda: bool(self._reap_queue) or self._closing, REAP_SWEEP_S)
                if self._closing:
                    return
                batch = list(self._reap_queue)
                self._reap_queue.clear()
            for session in batch:
                self._close_quietly(session)
            if batch:
                self._changed()
            if not batch:
                for up in self.upstreams().values():
                    up.sweep()

    def _drain_reaper(self) -> None:
        with self._reap_cond:
            batch = list(self._reap_queue)
            self._reap_queue.clear()
        for session in batch:
            self._close_quietly(session)

    @staticmethod
    def _close_quietly(session: ClientSession) -> None:
        try:
            session.close()
        except Exception:
            log.exception("hub: closing an upstream session failed")
