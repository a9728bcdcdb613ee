"""A lock per key, for read-modify-write sequences that span awaits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager

from twisted.internet import defer


class KeyedLock:
    """``async with lock(key):`` runs one holder per key at a time, in arrival order.

    Locks of keys nobody holds or waits for are dropped, so memory follows contention.
    """

    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[defer.DeferredLock, int]] = {}

    @asynccontextmanager
    async def __call__(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = defer.DeferredLock()
        self._locks[key] = (lock, users + 1)
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()
            held, count = self._locks[key]
            if count <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (held, count - 1)
