"""The notifier's deadline wheel, on a fake clock."""

from __future__ import annotations

from twisted.internet import defer, task

from homeserver.sync.notifier import TIMEOUT_GRANULARITY_S, Notifier


class _Parked:
    def __init__(self) -> None:
        self.woken = 0
        self.expired = 0

    def wake(self) -> None:
        self.woken += 1

    def expire(self) -> None:
        self.expired += 1


def test_deadlines_expire_once_in_order_unless_removed() -> None:
    clock = task.Clock()
    notifier = Notifier(clock)
    early, late, removed = _Parked(), _Parked(), _Parked()
    notifier.add_deadline(late, 2.0)
    notifier.add_deadline(early, 1.0)
    bucket = notifier.add_deadline(removed, 1.0)
    notifier.remove_deadline(bucket, removed)
    clock.advance(1.0 - TIMEOUT_GRANULARITY_S)
    assert (early.expired, late.expired) == (0, 0)
    clock.advance(TIMEOUT_GRANULARITY_S)
    assert (early.expired, late.expired, removed.expired) == (1, 0, 0)
    clock.advance(1.0)
    assert (early.expired, late.expired, removed.expired) == (1, 1, 0)
    clock.advance(10.0)
    assert (early.expired, late.expired, removed.expired) == (1, 1, 0)
    assert clock.getDelayedCalls() == []  # no timer left behind


def test_one_timer_for_many_deadlines() -> None:
    clock = task.Clock()
    notifier = Notifier(clock)
    parked = [_Parked() for _ in range(100)]
    for i, p in enumerate(parked):
        notifier.add_deadline(p, 5.0 + i * 0.001)
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(5.2)
    assert all(p.expired == 1 for p in parked)


def test_wait_returns_on_notify_or_timeout_and_cleans_up() -> None:
    clock = task.Clock()
    notifier = Notifier(clock)
    notified = defer.ensureDeferred(notifier.wait("@a:x", 30.0))
    timed_out = defer.ensureDeferred(notifier.wait("@b:x", 1.0))
    assert notifier.waiting_count() == 2
    notifier.notify_users(["@a:x"])
    assert notified.called and notified.result is True
    clock.advance(1.0)
    assert timed_out.called and timed_out.result is False
    assert notifier.waiting_count() == 0
    assert all(not members for members in notifier._buckets.values())
