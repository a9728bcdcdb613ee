"""encode_sync_body: shared room parts spliced in from their cached encoding."""

from __future__ import annotations

import json
from typing import Any

from homeserver.sync.encoding import SharedJson, encode_json, encode_sync_body


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def test_equal_to_encoding_the_plain_body() -> None:
    timeline = SharedJson(
        events=[{"type": "m.room.message", "content": {"body": 'é "quoted" \x00 \\u0000 0'}}],
        limited=False,
        prev_batch="t1-2",
    )
    state = SharedJson(events=[])
    body = {
        "next_batch": "s1_2",
        "rooms": {
            "join": {
                "!a:x": {"timeline": timeline, "state": state, "ephemeral": {"events": []}},
                "!b:x": {"timeline": timeline, "state": {"events": [{"n": "\x00"}]}},
            },
            "invite": {},
        },
        "presence": {"events": [{"content": {"s": '"\\u00000"'}}]},
    }
    encoded = encode_sync_body(body)
    assert encoded == encode_json(_plain(body)).encode("utf-8")
    assert json.loads(encoded) == _plain(body)
    # The body is left as it was, shared parts in place.
    assert body["rooms"]["join"]["!a:x"]["timeline"] is timeline  # type: ignore[index]


def test_bodies_without_rooms_and_call_replies() -> None:
    for body in ({"id": "1", "result": {}}, {"rooms": None}, {"rooms": {"join": {}}}):
        assert encode_sync_body(body) == encode_json(body).encode("utf-8")
