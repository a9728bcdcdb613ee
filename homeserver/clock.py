"""The clock every timed behaviour reads: the reactor in production, ``task.Clock`` in tests."""

from __future__ import annotations

from typing import Any, Protocol


class DelayedCall(Protocol):
    def cancel(self) -> None: ...

    def active(self) -> bool: ...


class Clock(Protocol):
    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Any, *args: Any, **kw: Any) -> Any: ...


def now_ms(clock: Clock) -> int:
    return int(clock.seconds() * 1000)
