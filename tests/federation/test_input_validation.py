"""Issue #14 item 7 on the federation API: integers out of range in a signed request
are 400, not a database overflow 500."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from crypto.signing_key import load_or_generate_signing_key
from federation.http_client import error_from_response
from federation.x_matrix import sign_request
from homeserver.media.multipart import MultipartError, MultipartParser
from tests.rooms.helpers import create_room, user
from tests.support.client import q
from tests.support.federation import federation_request
from tests.support.server import RunningServer


async def signed_get(origin: RunningServer, dest: RunningServer, path: str) -> tuple[int, Any]:
    """GET ``path`` on ``dest``, signed with ``origin``'s real key."""
    key = load_or_generate_signing_key(origin.hs.config.signing_key_path)
    auth = sign_request(key, "GET", path, origin.hs.server_name, dest.hs.server_name, None)
    return await federation_request(dest, "GET", path, auth=auth)


@pytest_twisted.ensureDeferred
async def test_timestamp_to_event_with_huge_ts_is_400(
    two_servers: tuple[RunningServer, RunningServer],
) -> None:
    a, b = two_servers
    alice = await user(a, "alice")
    room_id = await create_room(alice, preset="public_chat")
    base = f"/_matrix/federation/v1/timestamp_to_event/{q(room_id)}"
    code, body = await signed_get(b, a, f"{base}?ts=999999999999999999999&dir=f")
    assert (code, body.get("errcode")) == (400, "M_INVALID_PARAM"), body
    # A valid ts is answered once B is in the room (a server outside it gets 403).
    bob = await user(b, "bob")
    joined = await bob.post(
        f"/_matrix/client/v3/join/{q(room_id)}", {}, params={"server_name": a.hs.server_name}
    )
    assert joined.code == 200, joined.json
    code, body = await signed_get(b, a, f"{base}?ts=0&dir=f")
    assert code == 200, body


def test_error_answer_of_another_server_is_parsed_strictly() -> None:
    """Another server's answer is untrusted input too: 10,000-deep JSON was a
    RecursionError escaping the federation client instead of its own error type."""
    error = error_from_response("evil.example", 500, b"[" * 10000 + b"]" * 10000)
    assert (error.code, error.errcode) == (500, None)
    error = error_from_response("evil.example", 403, b'{"errcode": "M_FORBIDDEN", "error": "no"}')
    assert (error.code, error.errcode) == (403, "M_FORBIDDEN")


def test_remote_media_metadata_is_parsed_strictly() -> None:
    """The JSON part of a federation media answer: deep nesting was a RecursionError
    escaping the parser instead of its MultipartError."""
    boundary = b"b0undary"
    for metadata in (b"[" * 5000 + b"]" * 5000, b'{"a": "\\ud800"}'):
        parser = MultipartParser(boundary, lambda _data: None)
        with pytest.raises(MultipartError):
            parser.feed(
                b"--" + boundary + b"\r\nContent-Type: application/json\r\n\r\n" + metadata
                + b"\r\n--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\nx"
                + b"\r\n--" + boundary + b"--\r\n"
            )  # fmt: skip
            parser.finish()


@pytest.mark.parametrize("endpoint", ["state", "state_ids"])
@pytest_twisted.ensureDeferred
async def test_state_without_event_id_is_400_whatever_the_room(
    two_servers: tuple[RunningServer, RunningServer], endpoint: str
) -> None:
    """/state and /state_ids read their required event_id before the room (as Synapse):
    400 M_MISSING_PARAM even for a room the server does not know."""
    a, b = two_servers
    for room_id in ("!unknown:nowhere.test", "notaroom"):
        code, body = await signed_get(b, a, f"/_matrix/federation/v1/{endpoint}/{q(room_id)}")
        assert (code, body.get("errcode")) == (400, "M_MISSING_PARAM"), body
    code, body = await signed_get(
        b, a, f"/_matrix/federation/v1/{endpoint}/{q('!unknown:nowhere.test')}?event_id=%24x"
    )
    assert (code, body.get("errcode")) == (404, "M_NOT_FOUND"), body
