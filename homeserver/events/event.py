"""An event as held in memory: the PDU plus what we know about it locally.

The PDU dict is never mutated after the event id has been computed (the id is its
hash); only ``unsigned``, which no hash or signature covers, is filled in once while a
local event is built (``prev_content`` of a state event). Local facts — stream
position, the transaction id that produced it, whether it was redacted — live beside it.

The client form (``client_dict``) always carries ``room_id`` (a v12 create event's PDU
has none) and, for redactions, a top-level ``redacts`` (v11+ PDUs keep it in content).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from homeserver.events.format import event_reference_ids
from homeserver.events.redaction import prune_event, redaction_target
from homeserver.events.room_versions import RoomVersion

JsonDict = dict[str, Any]

# Keys a client never sees (server-server only).
_FEDERATION_ONLY_KEYS = ("auth_events", "prev_events", "hashes", "signatures", "depth", "origin")


@dataclass(slots=True, eq=False)
class Event:
    event_id: str
    pdu: JsonDict
    room_version: RoomVersion
    stream_ordering: int = 0
    txn_device_id: str | None = None
    txn_id: str | None = None
    redacted_by: str | None = None
    rejected_reason: str | None = None
    outlier: bool = False
    # For a redaction: whether its sender held the `redact` power level in the state it
    # was authorised against (set where the auth rules ran; False when not known, so an
    # unknown answer only lets same-server redactions apply). See events/redaction.py.
    sender_had_redact_power: bool = False
    # For a redaction: it does not (yet) take effect on its target (unknown, another
    # room, or not allowed), so clients are not given it, as Synapse withholds it.
    withheld: bool = False
    # The redaction event, when redacted_by is set and it has been loaded.
    redaction: Event | None = field(default=None, repr=False)
    # JSON of the client form, built once and shared by every recipient.
    _client_cache: JsonDict | None = field(default=None, repr=False)

    @property
    def room_id(self) -> str:
        room_id = self.pdu.get("room_id")
        if room_id is None:
            # Room version 12: the create event has no room_id; the id is its hash.
            return "!" + self.event_id[1:]
        return str(room_id)

    @property
    def type(self) -> str:
        return str(self.pdu["type"])

    @property
    def state_key(self) -> str | None:
        sk = self.pdu.get("state_key")
        return None if sk is None else str(sk)

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style read of the PDU, so pure filters can take events directly."""
        if key == "event_id":
            return self.event_id
        if key == "room_id":
            return self.room_id
        return self.pdu.get(key, default)

    def is_state(self) -> bool:
        return "state_key" in self.pdu

    @property
    def state_tuple(self) -> tuple[str, str]:
        return (self.type, self.state_key or "")

    @property
    def sender(self) -> str:
        return str(self.pdu["sender"])

    @property
    def content(self) -> JsonDict:
        content = self.pdu.get("content")
        return content if isinstance(content, dict) else {}

    @property
    def depth(self) -> int:
        return int(self.pdu.get("depth", 0))

    @property
    def origin_server_ts(self) -> int:
        return int(self.pdu.get("origin_server_ts", 0))

    @property
    def prev_event_ids(self) -> list[str]:
        return event_reference_ids(self.pdu.get("prev_events"))

    @property
    def auth_event_ids(self) -> list[str]:
        return event_reference_ids(self.pdu.get("auth_events"))

    @property
    def membership(self) -> str | None:
        if self.type != "m.room.member":
            return None
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    @property
    def redacts(self) -> str | None:
        """The target of a redaction, from this room version's field."""
        return redaction_target(self, self.room_version)

    def client_dict(self) -> JsonDict:
        """The client-server form (``event_format: client``), cached on the event.

        Callers must copy before adding per-recipient keys (``unsigned.transaction_id``).
        """
        if self._client_cache is None:
            source = prune_event(self.pdu, self.room_version) if self.redacted_by else self.pdu
            out = {k: v for k, v in source.items() if k not in _FEDERATION_ONLY_KEYS}
            out["event_id"] = self.event_id
            # A v12 create event has no room_id in its PDU; clients always get one.
            out["room_id"] = self.room_id
            # v11+ moved `redacts` into content; clients still get the top-level key,
            # naming the target this room version reads (a stray top-level `redacts` of
            # a v11+ event, which redacts nothing, would mislead clients).
            if self.type == "m.room.redaction":
                out.pop("redacts", None)
                redacts = self.redacts
                if redacts is not None:
                    out["redacts"] = redacts
            unsigned = dict(self.pdu.get("unsigned") or {}) if not self.redacted_by else {}
            unsigned.pop("age_ts", None)
            if self.redacted_by is not None:
                # As Synapse: the redaction's id, beside the redaction itself.
                unsigned["redacted_by"] = self.redacted_by
            if self.redaction is not None:
                unsigned["redacted_because"] = self.redaction.client_dict()
            if unsigned:
                out["unsigned"] = unsigned
            elif "unsigned" in out:
                del out["unsigned"]
            self._client_cache = out
        return self._client_cache

    def invalidate_client_cache(self) -> None:
        self._client_cache = None


def oldest_first(events: Iterable[Event]) -> list[Event]:
    """Events by depth, then arrival: the order of an auth chain or state in a federation
    response. Some servers (SyTest's among them) take each event in the order given, a
    later one of a (type, state_key) replacing an earlier one; a set's order would hand
    them a power level that has since been replaced."""
    return sorted(events, key=lambda ev: (ev.depth, ev.stream_ordering, ev.event_id))
