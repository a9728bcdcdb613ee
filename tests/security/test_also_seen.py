"""The "also seen" holes of issue #14: world-readable history after a leave, guests in
``can_join`` rooms, IPv6 literals in URL previews, remote media from bad server names."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.web import resource
from twisted.web.server import Site

from federation.interfaces import FederationRequestError
from homeserver.config import DEFAULT_URL_PREVIEW_IP_RANGE_BLACKLIST
from homeserver.http.ip_filter import IpFilter
from homeserver.media.preview import request_uri
from tests.api.helpers import assert_error, raw_http, with_config
from tests.rooms.helpers import (
    V3,
    create_room,
    join,
    leave,
    messages,
    put_state,
    room_path,
    send,
    send_raw,
    sync,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer

# World-readable rooms ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_world_readable_room_stays_readable_after_leaving(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    resp = await put_state(
        alice, room_id, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    assert resp.code == 200, resp
    assert (await join(bob, room_id)).code == 200
    assert (await leave(bob, room_id)).code == 200
    later = await send(alice, room_id, "after bob left")

    resp = await messages(bob, room_id, dir="b", limit=10)
    assert resp.code == 200, resp
    assert later in [e["event_id"] for e in resp.json["chunk"]]
    resp = await bob.get(room_path(room_id, f"/event/{q(later)}"))
    assert resp.code == 200, resp
    resp = await bob.get(room_path(room_id, f"/context/{q(later)}"))
    assert resp.code == 200, resp
    assert resp.json["event"]["event_id"] == later
    # And a stranger reads the same.
    carol = await user(server, "carol")
    resp = await carol.get(room_path(room_id, f"/event/{q(later)}"))
    assert resp.code == 200, resp


@pytest_twisted.ensureDeferred
async def test_shared_room_still_stops_at_the_leave(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_id = await create_room(alice, preset="public_chat")
    assert (await join(bob, room_id)).code == 200
    assert (await leave(bob, room_id)).code == 200
    later = await send(alice, room_id, "after bob left")
    resp = await messages(bob, room_id, dir="b", limit=10)
    assert later not in [e["event_id"] for e in resp.json["chunk"]]
    assert_error(await bob.get(room_path(room_id, f"/event/{q(later)}")), 404, "M_NOT_FOUND")


# Guests -------------------------------------------------------------------------------


async def _guest(server: RunningServer) -> Client:
    guest = server.client()
    resp = await guest.post(f"{V3}/register", {}, token=False, params={"kind": "guest"})
    assert resp.code == 200, resp
    guest.access_token = resp.json["access_token"]
    guest.user_id = resp.json["user_id"]
    return guest


async def _room_with_guest_access(server: RunningServer, guest_access: str) -> tuple[Client, str]:
    alice = await user(server, "alice")
    room_id = await create_room(alice, preset="public_chat")
    resp = await put_state(alice, room_id, "m.room.guest_access", {"guest_access": guest_access})
    assert resp.code == 200, resp
    return alice, room_id


@with_config(allow_guest_access=True)
@pytest_twisted.ensureDeferred
async def test_guest_joins_a_can_join_room_and_takes_part(server: RunningServer) -> None:
    alice, room_id = await _room_with_guest_access(server, "can_join")
    hello = await send(alice, room_id, "hello")
    guest = await _guest(server)
    resp = await guest.post(room_path(room_id, "/join"), {})
    assert resp.code == 200, resp
    sent = await send(guest, room_id, "hi from a guest")
    resp = await messages(guest, room_id, dir="b", limit=10)
    assert resp.code == 200, resp
    assert {hello, sent} <= {e["event_id"] for e in resp.json["chunk"]}
    body = await sync(guest)
    assert room_id in body["rooms"]["join"]
    assert (await guest.post(room_path(room_id, "/leave"), {})).code == 200


@with_config(allow_guest_access=True)
@pytest_twisted.ensureDeferred
async def test_guest_cannot_join_without_can_join(server: RunningServer) -> None:
    alice, room_id = await _room_with_guest_access(server, "forbidden")
    guest = await _guest(server)
    resp = await guest.post(room_path(room_id, "/join"), {})
    assert_error(resp, 403, "M_GUEST_ACCESS_FORBIDDEN")
    resp = await guest.post(f"{V3}/join/{q(room_id)}", {})
    assert_error(resp, 403, "M_GUEST_ACCESS_FORBIDDEN")
    # Still no sending into it, nor inviting anyone anywhere.
    assert (await send_raw(guest, room_id, "x")).code == 403
    resp = await guest.post(room_path(room_id, "/invite"), {"user_id": alice.user_id})
    assert_error(resp, 403, "M_GUEST_ACCESS_FORBIDDEN")


# URL previews of IPv6 literals ---------------------------------------------------------

PREVIEW = "/_matrix/client/v1/media/preview_url"
PAGE = b'<html><head><meta property="og:title" content="Over IPv6"></head></html>'


class _Page(resource.Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        request.setHeader(b"Content-Type", b"text/html")
        return PAGE


@pytest_twisted.async_yield_fixture
async def v6_page() -> AsyncIterator[str]:
    port = reactor.listenTCP(0, Site(_Page()), interface="::1")  # type: ignore[attr-defined]
    try:
        yield f"http://[::1]:{port.getHost().port}/page.html"
    finally:
        await port.stopListening()


@pytest.mark.parametrize("db_kind", ["sqlite"])  # no database part in it
@with_config(url_preview_enabled=True, url_preview_ip_range_whitelist=["::1/128"])
@pytest_twisted.ensureDeferred
async def test_preview_of_an_ipv6_literal_url(server: RunningServer, v6_page: str) -> None:
    alice = await user(server, "alice")
    resp = await alice.get(PREVIEW, params={"url": v6_page})
    assert resp.code == 200, resp
    assert resp.json["og:title"] == "Over IPv6"


@pytest.mark.parametrize("db_kind", ["sqlite"])
@with_config(url_preview_enabled=True)
@pytest_twisted.ensureDeferred
async def test_preview_of_a_blocked_ipv6_literal_is_refused(
    server: RunningServer, v6_page: str
) -> None:
    alice = await user(server, "alice")
    assert_error(await alice.get(PREVIEW, params={"url": v6_page}), 403, "M_UNKNOWN")
    for url in ("http://[::]:1/", "http://[::ffff:127.0.0.1]:1/", "http://[fe80::1]:1/"):
        assert_error(await alice.get(PREVIEW, params={"url": url}), 403, "M_UNKNOWN")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://[::1]:8080/", False),
        ("http://[fd00::1]/", False),
        ("http://[fe80::1]/", False),
        ("http://[::ffff:10.0.0.1]/", False),
        ("http://[2606:4700:4700::1111]:8080/x", True),
        ("http://[2001:4860:4860::8888]/", True),
    ],
)
def test_ipv6_literal_hosts_meet_the_default_block_list(url: str, allowed: bool) -> None:
    host = urllib.parse.urlsplit(url).hostname
    assert host is not None
    assert IpFilter(DEFAULT_URL_PREVIEW_IP_RANGE_BLACKLIST, []).allows(host) is allowed
    assert request_uri(url).startswith(url.split("]", 1)[0].encode() + b"]")


# Remote media from server names that name no host -------------------------------------

BAD_NAMES = ["..", ".", "a..b", "example.org.", "host:notaport", "a b"]


@pytest.mark.parametrize("db_kind", ["sqlite"])
@pytest_twisted.ensureDeferred
async def test_remote_media_from_a_bad_server_name_is_refused_at_once(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    started = time.monotonic()
    for name in BAD_NAMES[1:]:
        for path in (
            f"/_matrix/client/v1/media/download/{q(name)}/abcdef",
            f"/_matrix/client/v1/media/thumbnail/{q(name)}/abcdef?width=32&height=32",
            f"/_matrix/media/v3/download/{q(name)}/abcdef",
        ):
            d = defer.ensureDeferred(alice.get(path))
            d.addTimeout(10, reactor)
            assert_error(await d, 400, "M_INVALID_PARAM")
    # `..` itself, sent as is (a client library would fold it into the path).
    request = (
        b"GET /_matrix/media/v3/download/../abcdef HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status, _, body = await raw_http(server, request)
    assert status == 400 and b"M_INVALID_PARAM" in body, body
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("db_kind", ["sqlite"])
@pytest_twisted.ensureDeferred
async def test_federation_client_refuses_bad_destinations_before_any_lookup(
    server: RunningServer,
) -> None:
    assert server.hs.federation is not None
    for name in BAD_NAMES:
        d = defer.ensureDeferred(
            server.hs.federation.client.get_json(name, "/_matrix/federation/v1/version")
        )
        d.addTimeout(10, reactor)
        with pytest.raises(FederationRequestError) as caught:
            await d
        assert caught.value.code == 400, caught.value


@with_config(allow_guest_access=True)
@pytest_twisted.ensureDeferred
async def test_revoking_guest_access_removes_the_guests(server: RunningServer) -> None:
    # As Synapse (SyTest 30rooms/13guestaccess.pl): guests leave once it is revoked;
    # members who are not guests stay.
    alice, room_id = await _room_with_guest_access(server, "can_join")
    bob = await user(server, "bob")
    assert (await bob.post(room_path(room_id, "/join"), {})).code == 200
    guest = await _guest(server)
    assert (await guest.post(room_path(room_id, "/join"), {})).code == 200
    resp = await put_state(alice, room_id, "m.room.guest_access", {"guest_access": "forbidden"})
    assert resp.code == 200, resp
    # The guests leave in the background, once the revocation is persisted.
    assert await eventually_membership(alice, room_id, guest.user_id or "", "leave")
    path = f"/state/m.room.member/{urllib.parse.quote(bob.user_id or '')}"
    resp = await alice.get(room_path(room_id, path))
    assert resp.json["membership"] == "join", resp


async def eventually_membership(
    client: Client, room_id: str, user_id: str, membership: str, timeout: float = 10.0
) -> bool:
    """Whether ``user_id``'s membership of ``room_id``, as ``client`` sees it, becomes
    ``membership`` within ``timeout`` seconds."""
    path = room_path(room_id, f"/state/m.room.member/{urllib.parse.quote(user_id)}")
    deadline = time.monotonic() + timeout
    while True:
        resp = await client.get(path)
        if resp.code == 200 and resp.json["membership"] == membership:
            return True
        if time.monotonic() > deadline:
            return False
        await task.deferLater(reactor, 0.05, lambda: None)
