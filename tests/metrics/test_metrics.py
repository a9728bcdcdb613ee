"""Operating the server as a Synapse admin does: Prometheus metrics on a metrics
listener and an http listener's ``metrics`` resource, the access log, ``/health``."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor
from twisted.web._newclient import ResponseNeverReceived

from homeserver.metrics import METRICS_PATH
from tests.api.helpers import register, with_config
from tests.support.client import Client
from tests.support.server import RunningServer

LISTENERS = [
    {
        "port": 0,
        "bind_addresses": ["127.0.0.1"],
        "type": "http",
        "resources": [{"names": ["client", "federation", "keys", "media", "metrics"]}],
    },
    {"port": 0, "bind_addresses": ["127.0.0.1"], "type": "metrics"},
]

metrics_enabled = with_config(enable_metrics=True, listeners=LISTENERS)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    resp = await treq.get(url)
    assert resp.code == 200
    assert resp.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    text = (await treq.content(resp)).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, metric: str, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def metrics_url(server: RunningServer) -> str:
    return f"http://127.0.0.1:{server.hs.ports[1].getHost().port}/metrics"


@metrics_enabled
async def test_request_db_and_event_counters_move(server: RunningServer) -> None:
    url = metrics_url(server)
    alice = await register(server, "alice")
    before = await scrape(url)
    resp = await alice.post("/_matrix/client/v3/createRoom", {})
    assert resp.code == 200, resp
    room_id = resp.json["room_id"]
    resp = await alice.put(
        f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
        {"msgtype": "m.text", "body": "hi"},
    )
    assert resp.code == 200, resp
    after = await scrape(url)

    servlet = "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}"
    key = {"method": "PUT", "servlet": servlet}
    assert value(after, "synapse_http_server_requests_received_total", **key) == (
        value(before, "synapse_http_server_requests_received_total", **key) + 1
    )
    assert value(after, "synapse_http_server_response_count_total", **key, tag="") >= 1
    assert value(
        after, "synapse_http_server_response_time_seconds_count", **key, tag="", code="200"
    ) > value(before, "synapse_http_server_response_time_seconds_count", **key, tag="", code="200")
    assert value(after, "synapse_http_server_responses_total", method="PUT", code="200") > value(
        before, "synapse_http_server_responses_total", method="PUT", code="200"
    )
    # createRoom persists several events, the message one more.
    assert (
        value(after, "synapse_storage_events_persisted_events_total")
        - value(before, "synapse_storage_events_persisted_events_total")
        >= 6
    )
    txns = sum(
        v for (n, _), v in after.items() if n == "synapse_storage_transaction_time_count_total"
    )
    txns_before = sum(
        v for (n, _), v in before.items() if n == "synapse_storage_transaction_time_count_total"
    )
    assert txns > txns_before
    create = {"method": "POST", "servlet": "/_matrix/client/v3/createRoom", "tag": ""}
    assert value(after, "synapse_http_server_response_db_txn_count_total", **create) > value(
        before, "synapse_http_server_response_db_txn_count_total", **create
    )
    assert after.keys() & {("process_cpu_seconds_total", frozenset())}
    assert value(after, "python_twisted_reactor_tick_time_count") > 0
    assert value(after, "synapse_util_caches_cache_size", name="room_cache") >= 1


@metrics_enabled
async def test_http_listener_metrics_resource(server: RunningServer) -> None:
    samples = await scrape(server.base_url + METRICS_PATH)
    assert ("synapse_notifier_listeners", frozenset()) in samples
    # The rest of the listener is still the client API.
    resp = await server.client().get("/_matrix/client/versions")
    assert resp.code == 200


@metrics_enabled
async def test_sync_long_poll_shows_in_gauge(server: RunningServer) -> None:
    alice = await register(server, "alice")
    first = await alice.get("/_matrix/client/v3/sync")
    assert first.code == 200, first
    since = first.json["next_batch"]
    polling = defer.ensureDeferred(
        alice.get("/_matrix/client/v3/sync", params={"since": since, "timeout": "30000"})
    )
    samples: Samples = {}
    for _ in range(50):
        samples = await scrape(metrics_url(server))
        if value(samples, "synapse_notifier_listeners") >= 1:
            break
        await _sleep(0.05)
    assert value(samples, "synapse_notifier_listeners") >= 1
    # Wake it: an account data change.
    await alice.put(f"/_matrix/client/v3/user/{alice.user_id}/account_data/x.y", {"a": 1})
    assert (await polling).code == 200
    samples = await scrape(metrics_url(server))
    assert value(samples, "synapse_notifier_listeners") == 0


async def test_health(server: RunningServer) -> None:
    resp = await server.client().get("/health", token=False)
    assert resp.code == 200
    assert resp.raw == b"OK"
    assert resp.header("content-type") == "text/plain"


async def test_metrics_off_by_default(server: RunningServer) -> None:
    # No metrics resource unless enable_metrics (and the listener asks for it).
    resp = await server.client().get(METRICS_PATH, token=False)
    assert resp.code == 404


@with_config(listeners=LISTENERS)
async def test_metrics_listener_without_enable_metrics_is_not_opened(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    # As Synapse: a warning, and nothing listens for it; the http listener still serves.
    assert len(server.hs.ports) == 1
    assert any(
        "Metrics listener configured, but enable_metrics is not True!" in r.getMessage()
        for r in caplog.get_records("setup")
    )
    resp = await server.client().get(METRICS_PATH, token=False)
    assert resp.code == 404


async def test_access_log_line_without_access_token(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await register(server, "alice")
    token = alice.access_token
    assert token is not None
    caplog.set_level(logging.INFO, logger="synapse.access")
    anonymous = Client(server.base_url)
    resp = await anonymous.get(
        "/_matrix/client/v3/account/whoami",
        token=False,
        params={"access_token": token, "x": "1"},
        headers={"User-Agent": "metrics-test/1.0"},
    )
    assert resp.code == 200, resp
    await _sleep(0.05)
    lines = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("synapse.access.http.") and "/account/whoami" in r.getMessage()
    ]
    assert len(lines) == 1, lines
    line = lines[0]
    assert token not in line
    assert "access_token=<redacted>" in line
    assert line.startswith("127.0.0.1 - ")
    assert f"{{{alice.user_id}}} Processed request: " in line
    assert re.fullmatch(
        r"127\.0\.0\.1 - 0 - \{@alice:test\.local\} Processed request: "
        r"\d+\.\d{3}sec/-?\d+\.\d{3}sec ru=\(0\.000sec, 0\.000sec\) "
        r"db=\(\d+\.\d{3}sec/\d+\.\d{3}sec/\d+\) \d+B 200 "
        r'"GET /_matrix/client/v3/account/whoami\?access_token=<redacted>&x=1 HTTP/1\.1" '
        r'"metrics-test/1\.0" \[0 dbevts\]',
        line,
    ), line
    # The database transactions a request ran are counted in its line.
    assert (await alice.post("/_matrix/client/v3/createRoom", {})).code == 200
    await _sleep(0.05)
    created = [r.getMessage() for r in caplog.records if "/createRoom" in r.getMessage()]
    assert len(created) == 1, created
    found = re.search(r" db=\(\d+\.\d{3}sec/\d+\.\d{3}sec/(\d+)\) ", created[0])
    assert found is not None and int(found.group(1)) > 0, created
    assert (
        ' 200 "GET /_matrix/client/v3/account/whoami?access_token=<redacted>&x=1 HTTP/1.1"' in line
    )
    assert '"metrics-test/1.0" [0 dbevts]' in line
    # As Synapse, the logger and the tag are the listener's configured port.
    assert line.startswith("127.0.0.1 - 0 - ")
    assert any(r.name == "synapse.access.http.0" for r in caplog.records)


async def _sleep(seconds: float) -> None:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)  # type: ignore[attr-defined]
    await d


@metrics_enabled
async def test_grafana_dashboard_uses_only_served_metrics(server: RunningServer) -> None:
    assert (await server.client().get("/_matrix/client/versions")).code == 200
    resp = await treq.get(metrics_url(server))
    text = (await treq.content(resp)).decode()
    served: set[str] = set()
    for family in text_string_to_metric_families(text):
        served.add(family.name)
        served.update(sample.name for sample in family.samples)
    path = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "grafana_dashboard.json")
    with open(path, encoding="utf-8") as f:
        dashboard = json.load(f)
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:synapse|python|process)_[a-z_]+", target["expr"])
    }
    assert used
    assert used <= served, used - served


@metrics_enabled
async def test_federation_queue_and_backoff_per_destination(server: RunningServer) -> None:
    # Nothing listens on port 9 of 127.0.0.1 (and loopback is refused outbound anyway):
    # the EDU stays queued and the destination backs off.
    destination = "127.0.0.1:9"
    sender = server.hs.federation.sender  # type: ignore[union-attr]
    await sender.send_edu([destination], "m.typing", {"room_id": "!r:x", "user_id": "@u:x"})
    samples: Samples = {}
    for _ in range(100):
        samples = await scrape(metrics_url(server))
        retry = value(
            samples,
            "synapse_federation_destination_retry_interval_seconds",
            destination=destination,
        )
        if retry > 0:
            break
        await _sleep(0.05)
    assert retry > 0
    queued = value(
        samples, "synapse_federation_destination_queue_size", destination=destination, kind="edu"
    )
    assert queued == 1
    assert value(samples, "synapse_federation_transaction_queue_pending_edus") >= 1
    assert value(samples, "synapse_federation_transaction_queue_pending_destinations") >= 1


async def test_access_log_marks_a_request_the_client_gave_up(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await register(server, "alice")
    first = await alice.get("/_matrix/client/v3/sync")
    since = first.json["next_batch"]
    caplog.set_level(logging.INFO, logger="synapse.access")
    polling = defer.ensureDeferred(
        alice.get(
            "/_matrix/client/v3/sync",
            params={"since": since, "timeout": "30000"},
            headers={"User-Agent": "gives-up/1.0"},
        )
    )
    await _sleep(0.3)
    polling.cancel()  # closes the connection
    with pytest.raises((defer.CancelledError, ResponseNeverReceived)):
        await polling
    lines: list[str] = []
    for _ in range(40):
        lines = [
            r.getMessage()
            for r in caplog.records
            if r.name.startswith("synapse.access.") and "gives-up/1.0" in r.getMessage()
        ]
        if lines:
            break
        await _sleep(0.05)
    assert len(lines) == 1, lines
    # Parked, the long-poll forgot its query string (it may hold a token).
    assert ' 200! "GET /_matrix/client/v3/sync HTTP/1.1" "gives-up/1.0"' in lines[0], lines
    assert f"{{{alice.user_id}}}" in lines[0]
