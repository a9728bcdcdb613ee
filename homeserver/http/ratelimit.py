"""Token-bucket rate limiting keyed by anything (an address, a user id).

Time comes from the injected clock, so tests advance it rather than sleep. Buckets that
have refilled completely are dropped, so memory is bounded by recent activity.
"""

from __future__ import annotations

from typing import Protocol

from homeserver.clock import Clock
from homeserver.config import RateLimit
from homeserver.errors import LimitExceededError


class RatelimitSubject(Protocol):
    """What ``ratelimit_requester`` needs of a requester (``handlers.auth.Requester``)."""

    @property
    def user_id(self) -> str: ...

    @property
    def ratelimited(self) -> bool: ...


class Ratelimiter:
    def __init__(self, clock: Clock, limit: RateLimit) -> None:
        self._clock = clock
        self.limit = limit
        # key -> (tokens used, time of last update)
        self._buckets: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, now: float) -> float:
        used, last = self._buckets.get(key, (0.0, now))
        return max(0.0, used - (now - last) * self.limit.per_second)

    def can_do(self, key: str, *, cost: float = 1.0) -> tuple[bool, float]:
        """(allowed, seconds until allowed) without recording anything."""
        if self.limit.per_second <= 0 and self.limit.burst_count <= 0:
            return True, 0.0
        now = self._clock.seconds()
        level = self._level(key, now)
        if level + cost <= self.limit.burst_count:
            return True, 0.0
        if self.limit.per_second <= 0:
            return False, 3600.0
        return False, (level + cost - self.limit.burst_count) / self.limit.per_second

    def record(self, key: str, *, cost: float = 1.0) -> None:
        now = self._clock.seconds()
        self._buckets[key] = (self._level(key, now) + cost, now)
        if len(self._buckets) > 10_000:
            self._prune(now)

    def ratelimit(self, key: str, *, cost: float = 1.0, update: bool = True) -> None:
        """Record one action or raise 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``.

        ``update=False`` only checks that the action would be allowed, recording nothing
        (for limits counted later, e.g. on failure or on success only).
        """
        allowed, wait = self.can_do(key, cost=cost)
        if not allowed:
            raise LimitExceededError(max(1, int(wait * 1000)))
        if update:
            self.record(key, cost=cost)

    def ratelimit_requester(
        self, requester: RatelimitSubject, *, cost: float = 1.0, update: bool = True
    ) -> None:
        """``ratelimit`` keyed by the requester's user id, unless the requester is exempt
        (an application service's sender, or a user of a service registered with
        ``rate_limited: false``)."""
        if requester.ratelimited:
            self.ratelimit(requester.user_id, cost=cost, update=update)

    def _prune(self, now: float) -> None:
        for key in [k for k in self._buckets if self._level(k, now) <= 0]:
            del self._buckets[key]
