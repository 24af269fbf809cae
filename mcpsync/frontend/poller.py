"""Pollers for the dispatcher: edge-triggered epoll on Linux, level-triggered selectors elsewhere.

The dispatcher registers each channel once (``add``) and asks for writability only while it
flushes (``set_write``). With epoll (``edge_triggered``) an event means "new bytes, or room,
since you last looked", so a reader reads until the kernel has no more and nothing is
re-armed between requests; with selectors a channel a worker owns is unwatched (``pause``
/ ``resume``) so that its pending bytes do not wake the loop again and again.
"""
from __future__ import annotations

import select
import selectors
from typing import Protocol


class Poller(Protocol):
    edge_triggered: bool

    def watch(self, fd: int) -> None: ...
    def unwatch(self, fd: int) -> None: ...
    def add(self, fd: int) -> None: ...
    def set_write(self, fd: int, on: bool) -> None: ...
    def pause(self, fd: int) -> None: ...
    def resume(self, fd: int) -> None: ...
    def remove(self, fd: int) -> None: ...
    def hold(self, fd: int) -> None: ...
    def unhold(self, fd: int) -> None: ...
    def poll(self, timeout: float) -> list[tuple[int, int]]: ...
    def close(self) -> None: ...


READABLE = 1     # select.EPOLLIN == select.POLLIN == selectors.EVENT_READ
WRITABLE = 4     # select.EPOLLOUT == select.POLLOUT; selectors.EVENT_WRITE is mapped to it
TROUBLE = 8 | 16 | 0x2000  # EPOLLERR | EPOLLHUP | EPOLLRDHUP: read (or write) to find out


class EpollPoller:
    """Linux: channels registered once, edge-triggered: an event means "new bytes (or
    room) since you last looked", so a reader must read until the kernel has no more, and
    nothing needs re-arming between requests (no system call between two requests)."""

    edge_triggered = True

    def __init__(self) -> None:
        self._ep = select.epoll()
        self._read = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET

    def watch(self, fd: int) -> None:
        self._ep.register(fd, select.EPOLLIN)

    def unwatch(self, fd: int) -> None:
        self._ep.unregister(fd)

    def add(self, fd: int) -> None:
        self._ep.register(fd, self._read)

    def set_write(self, fd: int, on: bool) -> None:
        self._ep.modify(fd, self._read | select.EPOLLOUT if on else self._read)

    def pause(self, fd: int) -> None:
        pass

    def resume(self, fd: int) -> None:
        pass

    def remove(self, fd: int) -> None:
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass

    def hold(self, fd: int) -> None:
        """A worker reads ``fd`` itself for a while (any thread: ``epoll_ctl`` is): no
        events for it meanwhile, so the dispatcher is not woken by each of its requests."""
        self.remove(fd)

    def unhold(self, fd: int) -> None:
        """Watch ``fd`` again after ``hold`` (any thread). Registering reports bytes that
        are already there, so nothing that came meanwhile is missed."""
        self._ep.register(fd, self._read)

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        return self._ep.poll(timeout)

    def close(self) -> None:
        self._ep.close()


class SelectorPoller:
    """Anywhere: level-triggered; a channel with a worker is not watched (``pause``)."""

    edge_triggered = False

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()

    def watch(self, fd: int) -> None:
        self._sel.register(fd, selectors.EVENT_READ)

    def unwatch(self, fd: int) -> None:
        self._sel.unregister(fd)

    def add(self, fd: int) -> None:
        self._sel.register(fd, selectors.EVENT_READ)

    def set_write(self, fd: int, on: bool) -> None:  # a channel flushing is not read
        self._watch(fd, selectors.EVENT_WRITE if on else selectors.EVENT_READ)

    def pause(self, fd: int) -> None:
        self.remove(fd)

    def resume(self, fd: int) -> None:
        self._watch(fd, selectors.EVENT_READ)

    def _watch(self, fd: int, events: int) -> None:
        try:
            self._sel.modify(fd, events)
        except KeyError:
            self._sel.register(fd, events)

    def remove(self, fd: int) -> None:
        try:
            self._sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    def hold(self, fd: int) -> None:  # a channel with a worker is not watched here anyway
        pass

    def unhold(self, fd: int) -> None:
        pass

    def poll(self, timeout: float) -> list[tuple[int, int]]:
        return [(key.fd, (READABLE if mask & selectors.EVENT_READ else 0)
                 | (WRITABLE if mask & selectors.EVENT_WRITE else 0))
                for key, mask in self._sel.select(timeout)]

    def close(self) -> None:
        self._sel.close()


def default_poller() -> Poller:
    return EpollPoller() if hasattr(select, "epoll") else SelectorPoller()
