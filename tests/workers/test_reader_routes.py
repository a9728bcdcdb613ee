"""What a reader process (a sync worker) serves; everything else is 404 there."""

from __future__ import annotations

import pytest

from homeserver.server import served_by_reader

ROOM = "/_matrix/client/v3/rooms/!abc:example.com"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/_matrix/client/v3/sync"),
        ("GET", "/_matrix/client/r0/sync"),
        ("HEAD", "/_matrix/client/v3/sync"),
        ("OPTIONS", "/_matrix/client/v3/sync"),
        ("GET", "/_matrix/client/v3/events"),
        ("GET", f"{ROOM}/messages"),
        ("GET", f"{ROOM}/context/$ev"),
        ("GET", f"{ROOM}/state"),
        ("GET", f"{ROOM}/state/m.room.name/"),
        ("GET", f"{ROOM}/members"),
        ("GET", f"{ROOM}/joined_members"),
        ("GET", f"{ROOM}/event/$ev"),
        ("GET", "/_matrix/client/v3/joined_rooms"),
        ("GET", "/_matrix/client/v3/profile/@a:example.com"),
        ("GET", "/_matrix/client/v3/profile/@a:example.com/displayname"),
        ("GET", "/_matrix/client/v3/pushrules/"),
        ("GET", "/_matrix/client/v3/pushrules/global/override/.m.rule.master"),
        ("GET", "/_matrix/client/v3/account/whoami"),
        ("POST", "/_matrix/client/v3/keys/query"),
        ("GET", "/_matrix/client/v3/keys/changes"),
        ("GET", "/_matrix/client/unstable/org.matrix.msc3575/sync"),
        ("GET", "/_matrix/client/versions"),
        ("GET", "/.well-known/matrix/client"),
        ("GET", "/health"),
    ],
)
def test_served(method: str, path: str) -> None:
    assert served_by_reader(method.encode(), path.encode())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", f"{ROOM}/send/m.room.message/t1"),
        ("PUT", f"{ROOM}/state/m.room.name/"),
        ("POST", "/_matrix/client/v3/createRoom"),
        ("POST", "/_matrix/client/v3/register"),
        ("POST", "/_matrix/client/v3/login"),
        ("PUT", "/_matrix/client/v3/profile/@a:example.com/displayname"),
        ("PUT", "/_matrix/client/v3/pushrules/global/override/x"),
        ("POST", "/_matrix/client/v3/keys/upload"),
        ("POST", "/_matrix/client/v3/keys/claim"),
        ("PUT", "/_matrix/client/v3/sendToDevice/m.test/1"),
        ("GET", "/_matrix/client/v3/sync/extra"),
        ("GET", "/_matrix/federation/v1/version"),
        ("GET", "/_matrix/media/v3/config"),
        ("GET", "/_synapse/admin/v2/users/@a:example.com"),
    ],
)
def test_not_served(method: str, path: str) -> None:
    assert not served_by_reader(method.encode(), path.encode())
