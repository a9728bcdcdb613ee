"""Encoding /sync bodies whose rooms share parts: each shared part is encoded once.

When one event wakes every member of a room, ``SyncHandler`` builds the room's timeline
and state once and puts the same ``SharedJson`` objects into every member's response.
Encoding those bodies one by one would serialise the same events hundreds of times;
``encode_sync_body`` serialises each shared part once and splices its text in.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from homeserver.untrusted import utf8_json

JsonDict = dict[str, Any]

_SEPARATORS = (",", ":")


# One encoder for every call: json.dumps with options builds a new one each time.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=_SEPARATORS)


def encode_json(value: Any) -> str:
    """Compact JSON as every response is written (UTF-8 kept, no spaces)."""
    return _ENCODER.encode(value)


class SharedJson(dict[str, Any]):
    """A JSON object placed in many responses, never mutated after it is built."""

    __slots__ = ("_encoded",)

    def encoded(self) -> str:
        try:
            return self._encoded
        except AttributeError:
            self._encoded: str = encode_json(self)
            return self._encoded


# The parts of a joined room's section that may be shared.
_SHARED_KEYS = ("timeline", "state")
# Markers are NUL (always escaped in the output) and a per-process secret: no string
# in an event can encode to one.
_MARKER = "\x00" + secrets.token_hex(8) + "-"
_ENCODED_MARKER = encode_json(_MARKER)[:-1]  # the opening quote and escaped text


def encode_sync_body(body: JsonDict) -> bytes:
    """``body`` as UTF-8 JSON, each ``SharedJson`` under ``rooms.join.*`` spliced in
    from its cached encoding. Equal to encoding ``body`` directly."""
    swapped: list[tuple[JsonDict, str, SharedJson]] = []
    rooms = body.get("rooms")
    join = rooms.get("join") if isinstance(rooms, dict) else None
    if isinstance(join, dict):
        for section in join.values():
            for key in _SHARED_KEYS:
                value = section.get(key)
                if type(value) is SharedJson:
                    section[key] = f"{_MARKER}{len(swapped)}"
                    swapped.append((section, key, value))
    if not swapped:
        return utf8_json(encode_json(body))
    try:
        text = encode_json(body)
    finally:
        for section, key, value in swapped:
            section[key] = value
    for index, (_, _, value) in enumerate(swapped):
        text = text.replace(f'{_ENCODED_MARKER}{index}"', value.encoded(), 1)
    return utf8_json(text)
