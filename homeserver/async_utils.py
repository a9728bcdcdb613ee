"""Small helpers for Deferreds shared between several waiters."""

from __future__ import annotations

from typing import Any, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

T = TypeVar("T")


def observe(source: defer.Deferred[T]) -> defer.Deferred[T]:
    """A new Deferred with ``source``'s result, leaving ``source``'s own chain unchanged."""
    observer: defer.Deferred[T] = defer.Deferred()

    def _pass(result: Any) -> Any:
        if isinstance(result, Failure):
            observer.errback(result)
        else:
            observer.callback(result)
        return result

    source.addBoth(_pass)
    return observer
