"""Token-bucket rate limiting keyed by anything (an address, a user id), and the
per-origin limiter of inbound federation (delay, concurrency, rejection).

Time comes from the injected clock, so tests advance it rather than sleep. Buckets that
have refilled completely are dropped, so memory is bounded by recent activity.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from homeserver.clock import Clock
from homeserver.config import FederationRateLimit, InviteRateLimits, RateLimit
from homeserver.errors import LimitExceededError


class RatelimitSubject(Protocol):
    """What ``ratelimit_requester`` needs of a requester (``homeserver.requester.Requester``)."""

    @property
    def user_id(self) -> str: ...

    @property
    def ratelimited(self) -> bool: ...


class RatelimitOverrides(Protocol):
    """Per-user limits set by an admin (``handlers.restrictions.UserRestrictions``)."""

    def override_limit(self, user_id: str) -> RateLimit | None: ...


class Ratelimiter:
    def __init__(
        self,
        clock: Clock,
        limit: RateLimit,
        *,
        overrides: RatelimitOverrides | None = None,
        honour_override_values: bool = False,
    ) -> None:
        """``overrides``: an admin's per-user override in ``ratelimit_requester``. One
        with zero messages per second exempts the user; its values replace ``limit``
        only where ``honour_override_values`` (the message limiter, as Synapse)."""
        self._clock = clock
        self.limit = limit
        self._overrides = overrides
        self._honour_values = honour_override_values
        # key -> (tokens used, time of last update)
        self._buckets: dict[str, tuple[float, float]] = {}

    def _level(self, key: str, now: float, limit: RateLimit) -> float:
        used, last = self._buckets.get(key, (0.0, now))
        return max(0.0, used - (now - last) * limit.per_second)

    def can_do(
        self, key: str, *, cost: float = 1.0, limit: RateLimit | None = None
    ) -> tuple[bool, float]:
        """(allowed, seconds until allowed) without recording anything."""
        limit = limit or self.limit
        if limit.per_second <= 0 and limit.burst_count <= 0:
            return True, 0.0
        now = self._clock.seconds()
        level = self._level(key, now, limit)
        if level + cost <= limit.burst_count:
            return True, 0.0
        if limit.per_second <= 0:
            return False, 3600.0
        return False, (level + cost - limit.burst_count) / limit.per_second

    def record(self, key: str, *, cost: float = 1.0, limit: RateLimit | None = None) -> None:
        now = self._clock.seconds()
        self._buckets[key] = (self._level(key, now, limit or self.limit) + cost, now)
        if len(self._buckets) > 10_000:
            self._prune(now)

    def ratelimit(
        self,
        key: str,
        *,
        cost: float = 1.0,
        update: bool = True,
        limit: RateLimit | None = None,
    ) -> None:
        """Record one action or raise 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``.

        ``update=False`` only checks that the action would be allowed, recording nothing
        (for limits counted later, e.g. on failure or on success only).
        """
        allowed, wait = self.can_do(key, cost=cost, limit=limit)
        if not allowed:
            raise LimitExceededError(max(1, int(wait * 1000)))
        if update:
            self.record(key, cost=cost, limit=limit)

    def ratelimit_requester(
        self, requester: RatelimitSubject, *, cost: float = 1.0, update: bool = True
    ) -> None:
        """``ratelimit`` keyed by the requester's user id, unless the requester is exempt
        (an application service's sender, a user of a service registered with
        ``rate_limited: false``, or a user an admin exempted)."""
        if not requester.ratelimited:
            return
        limit = None
        if self._overrides is not None:
            override = self._overrides.override_limit(requester.user_id)
            if override is not None:
                if not override.per_second:
                    return
                if self._honour_values:
                    limit = override
        self.ratelimit(requester.user_id, cost=cost, update=update, limit=limit)

    def _prune(self, now: float) -> None:
        for key in [k for k in self._buckets if self._level(k, now, self.limit) <= 0]:
            del self._buckets[key]


class InviteRatelimiter:
    """``rc_invites``: per room, per invited user and per inviting user (Synapse's three
    limiters). All three are checked before any is counted, so a refusal costs nothing."""

    def __init__(self, clock: Clock, limits: InviteRateLimits) -> None:
        self._per_room = Ratelimiter(clock, limits.per_room)
        self._per_user = Ratelimiter(clock, limits.per_user)
        self._per_issuer = Ratelimiter(clock, limits.per_issuer)

    def ratelimit(self, room_id: str | None, invitee: str, issuer: str | None) -> None:
        """Raise 429 ``M_LIMIT_EXCEEDED`` or count one invite; a None key is not limited
        (Synapse leaves a federation invite's room to the sending server)."""
        checks = [
            (limiter, key)
            for limiter, key in (
                (self._per_room, room_id),
                (self._per_user, invitee),
                (self._per_issuer, issuer),
            )
            if key is not None
        ]
        for limiter, key in checks:
            limiter.ratelimit(key, update=False)
        for limiter, key in checks:
            limiter.record(key)


class _OriginState:
    def __init__(self) -> None:
        self.request_times: list[float] = []
        self.running = 0
        self.sleeping = 0
        self.queue: deque[Deferred[None]] = deque()


class FederationRateLimiter:
    """``rc_federation``: inbound requests per origin server, as Synapse's
    ``FederationRateLimiter``. Past ``sleep_limit`` requests within ``window_size`` a
    request first waits ``sleep_delay``; at most ``concurrent`` run at once, the others
    queue; with more than ``reject_limit`` sleeping or queued, a new one is refused 429.

    Every successful ``enter(origin)`` must be paired with one ``leave(origin)``.
    """

    def __init__(self, clock: Clock, limit: FederationRateLimit) -> None:
        self._clock = clock
        self.limit = limit
        self._origins: dict[str, _OriginState] = {}

    async def enter(self, origin: str) -> None:
        state = self._origins.setdefault(origin, _OriginState())
        now = self._clock.seconds()
        window = self.limit.window_size / 1000
        state.request_times = [t for t in state.request_times if now - t < window]
        if len(state.queue) + state.sleeping > self.limit.reject_limit:
            raise LimitExceededError(max(1, self.limit.window_size // self.limit.sleep_limit))
        state.request_times.append(now)
        if len(state.request_times) > self.limit.sleep_limit:
            state.sleeping += 1
            try:
                await deferLater(self._clock, self.limit.sleep_delay / 1000, lambda: None)  # type: ignore[arg-type]
            finally:
                state.sleeping -= 1
        if state.running < self.limit.concurrent:
            state.running += 1
            return
        waiter: Deferred[None] = Deferred()
        state.queue.append(waiter)
        await waiter  # leave() hands its slot over: running stays counted

    def leave(self, origin: str) -> None:
        state = self._origins.get(origin)
        if state is None:
            return
        while state.queue:
            waiter = state.queue.popleft()
            if not waiter.called:  # a cancelled waiter (its client went away) is skipped
                waiter.callback(None)
                return
        state.running -= 1
        if not state.running and not state.sleeping:
            now = self._clock.seconds()
            window = self.limit.window_size / 1000
            if all(now - t >= window for t in state.request_times):
                del self._origins[origin]
