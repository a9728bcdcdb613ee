"""Prometheus metrics, named as Synapse's so its Grafana dashboards mostly work.

Invariants:
- Recording on the hot path is a counter increment or a histogram observation, nothing
  more: no strings built, no queries, no locks held across a wait.
- Gauges of live state (queues, connections, caches) are computed only when scraped,
  from the ``MetricsSources`` a running server registers; a stopped server unregisters
  its sources, so a scrape never reads a dead server.
- Metrics live in prometheus_client's default registry, as Synapse's do (one process,
  one set of counters): the process collector (CPU, memory, open files) comes with it.
  Several test servers in one process share the counters: tests read deltas.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet import defer
from twisted.web import resource, server

METRICS_PATH = "/_synapse/metrics"

# HTTP (Synapse's synapse/http/request_metrics.py): `servlet` is our route pattern.
REQUESTS_RECEIVED = Counter(
    "synapse_http_server_requests_received", "", labelnames=["method", "servlet"]
)
RESPONSES = Counter("synapse_http_server_responses", "", labelnames=["method", "code"])
RESPONSE_COUNT = Counter(
    "synapse_http_server_response_count", "", labelnames=["method", "servlet", "tag"]
)
RESPONSE_TIME = Histogram(
    "synapse_http_server_response_time_seconds",
    "sec",
    labelnames=["method", "servlet", "tag", "code"],
)
RESPONSE_SIZE = Counter(
    "synapse_http_server_response_size", "", labelnames=["method", "servlet", "tag"]
)
RESPONSE_DB_TXN_COUNT = Counter(
    "synapse_http_server_response_db_txn_count", "", labelnames=["method", "servlet", "tag"]
)
RESPONSE_DB_TXN_DURATION = Counter(
    "synapse_http_server_response_db_txn_duration_seconds",
    "",
    labelnames=["method", "servlet", "tag"],
)
RESPONSE_DB_SCHED_DURATION = Counter(
    "synapse_http_server_response_db_sched_duration_seconds",
    "",
    labelnames=["method", "servlet", "tag"],
)

# The request whose handling is running (its coroutine keeps the context it started
# in): database transactions add their count and times to its ``db_txn_count``,
# ``db_txn_duration`` and ``db_sched_duration`` (reactor thread only).
current_db_usage: contextvars.ContextVar[Any] = contextvars.ContextVar("db_usage", default=None)


def record_db_usage(sched_seconds: float, txn_seconds: float) -> None:
    usage = current_db_usage.get()
    if usage is not None:
        usage.db_txn_count += 1
        usage.db_txn_duration += txn_seconds
        usage.db_sched_duration += sched_seconds


# Database (Synapse's synapse/storage/database.py): `desc` is the transaction's name.
SCHEDULE_TIME = Histogram("synapse_storage_schedule_time", "sec")
TRANSACTION_COUNT = Counter("synapse_storage_transaction_time_count", "sec", labelnames=["desc"])
TRANSACTION_TIME = Counter("synapse_storage_transaction_time_sum", "sec", labelnames=["desc"])

# Events (Synapse's synapse/storage/databases/main/events.py).
EVENTS_PERSISTED = Counter("synapse_storage_events_persisted_events", "")

# The reactor (Synapse's synapse/metrics/_reactor_metrics.py).
REACTOR_TICK_TIME = Histogram(
    "python_twisted_reactor_tick_time",
    "Tick time of the Twisted reactor (sec)",
    buckets=[0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5],
)


class MetricsSources:
    """What one running server exposes to scrapes: gauge readers (called on the
    reactor thread when scraped, cheap) and refreshers (awaited before each scrape,
    for numbers that live in the database)."""

    def __init__(self) -> None:
        self.gauges: list[Callable[[], Iterable[Metric]]] = []
        self.refreshers: list[Callable[[], Awaitable[None]]] = []

    async def refresh(self) -> None:
        for refresher in self.refreshers:
            await refresher()


class _LiveCollector(Collector):
    """Reads the gauges of every registered server at scrape time."""

    def __init__(self) -> None:
        self.sources: list[MetricsSources] = []

    def collect(self) -> Iterable[Metric]:
        for sources in list(self.sources):
            for reader in sources.gauges:
                yield from reader()


_LIVE = _LiveCollector()
REGISTRY.register(_LIVE)


def register_sources(sources: MetricsSources) -> None:
    _LIVE.sources.append(sources)


def unregister_sources(sources: MetricsSources) -> None:
    if sources in _LIVE.sources:
        _LIVE.sources.remove(sources)


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def labelled_gauge(
    name: str, documentation: str, label: str, values: dict[str, float]
) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in values.items():
        family.add_metric([key], value)
    return family


def cache_gauges(caches: dict[str, tuple[int, int, int]]) -> Iterable[Metric]:
    """Synapse's cache metrics from ``name -> (size, hits, misses)``."""
    size = GaugeMetricFamily("synapse_util_caches_cache_size", "", labels=["name"])
    hits = GaugeMetricFamily("synapse_util_caches_cache_hits", "", labels=["name"])
    total = GaugeMetricFamily("synapse_util_caches_cache", "", labels=["name"])
    for name, (entries, hit, miss) in caches.items():
        size.add_metric([name], entries)
        hits.add_metric([name], hit)
        total.add_metric([name], hit + miss)
    return [size, hits, total]


# Federation sender gauges, refreshed from the outbox before each scrape.
FEDERATION_PENDING_DESTINATIONS = Gauge(
    "synapse_federation_transaction_queue_pending_destinations", ""
)
FEDERATION_PENDING_PDUS = Gauge("synapse_federation_transaction_queue_pending_pdus", "")
FEDERATION_PENDING_EDUS = Gauge("synapse_federation_transaction_queue_pending_edus", "")
FEDERATION_DESTINATION_QUEUE = Gauge(
    "synapse_federation_destination_queue_size",
    "Items queued for a destination, by kind (pdu, edu)",
    labelnames=["destination", "kind"],
)


def set_federation_queue(counts: dict[tuple[str, str], int]) -> None:
    FEDERATION_DESTINATION_QUEUE.clear()
    for (destination, kind), count in counts.items():
        FEDERATION_DESTINATION_QUEUE.labels(destination, kind).set(count)
    FEDERATION_PENDING_DESTINATIONS.set(len({d for d, _ in counts}))
    FEDERATION_PENDING_PDUS.set(sum(c for (_, k), c in counts.items() if k == "pdu"))
    FEDERATION_PENDING_EDUS.set(sum(c for (_, k), c in counts.items() if k == "edu"))


class MetricsResource(resource.Resource):
    """Prometheus text for every path below it: refreshes database-backed gauges, then
    renders the registry."""

    isLeaf = True

    def __init__(self, sources: MetricsSources) -> None:
        super().__init__()
        self._sources = sources

    def render_GET(self, request: server.Request) -> Any:
        defer.ensureDeferred(self._answer(request))
        return server.NOT_DONE_YET

    async def _answer(self, request: server.Request) -> None:
        try:
            await self._sources.refresh()
        except Exception:  # a stale gauge beats no metrics at all
            import logging

            logging.getLogger(__name__).exception("Refreshing metrics failed")
        if request._disconnected:  # type: ignore[attr-defined]
            return
        body = generate_latest(REGISTRY)
        request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
        request.setHeader(b"Content-Length", str(len(body)).encode())
        request.write(body)
        request.finish()


class ReactorTickTimer:
    """Observes ``python_twisted_reactor_tick_time`` as Synapse does: the time from one
    return of the reactor's poll to the next call, i.e. the work done between waits.
    Installed by wrapping the poller of an epoll/poll reactor; other reactors get none."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._original: Any = None

    def install(self) -> bool:
        poller = getattr(self._reactor, "_poller", None)
        if poller is None or not hasattr(poller, "poll") or isinstance(poller, _TimedPoller):
            return False
        self._original = poller
        self._reactor._poller = _TimedPoller(poller)
        return True

    def uninstall(self) -> None:
        if self._original is not None and isinstance(
            getattr(self._reactor, "_poller", None), _TimedPoller
        ):
            self._reactor._poller = self._original
        self._original = None


class _TimedPoller:
    __slots__ = ("_last_return", "_poller")

    def __init__(self, poller: Any) -> None:
        self._poller = poller
        self._last_return: float | None = None

    def poll(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        if self._last_return is not None:
            REACTOR_TICK_TIME.observe(start - self._last_return)
        try:
            return self._poller.poll(*args, **kwargs)
        finally:
            self._last_return = time.perf_counter()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._poller, name)
