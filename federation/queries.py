"""Asking other servers for our clients: profiles and public room lists.

Invariants:
- Every answer is checked before it is used: wrong types are dropped or refused (502),
  bodies are bounded (``max_body_bytes``) and so is the whole exchange (``timeout_s``).
- An unfiltered room list page is kept ``ROOM_LIST_CACHE_S`` after it arrived (as
  Synapse), so clients paging or refreshing do not each cost the other server a
  request; errors are not kept.
- Errors reach the client with Synapse's statuses: the other server's 404 and 403 as
  they are, a timeout as 504, anything else as 502.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from typing import Any

from federation.interfaces import FederationClient, FederationRequestError
from homeserver.clock import Clock
from homeserver.errors import Codes, MatrixError
from homeserver.rooms.directory import PublicRoomsQuery, entry_matches, paginate

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

PROFILE_TIMEOUT_S = 15.0
PROFILE_MAX_BYTES = 256 * 1024  # a profile is at most 64 KiB; leave room for escapes
ROOM_LIST_TIMEOUT_S = 30.0
ROOM_LIST_MAX_BYTES = 10 * 1024 * 1024
# As Synapse: an unfiltered page of another server's list is reused for 30 s.
ROOM_LIST_CACHE_S = 30.0
ROOM_LIST_CACHE_SIZE = 500

# Entry fields of the spec's PublishedRoomsChunk and the type each must have.
_ENTRY_FIELDS: dict[str, type | tuple[type, ...]] = {
    "room_id": str,
    "num_joined_members": int,
    "world_readable": bool,
    "guest_can_join": bool,
    "name": str,
    "topic": str,
    "canonical_alias": str,
    "avatar_url": str,
    "join_rule": str,
    "room_type": str,
}
_REQUIRED_ENTRY_FIELDS = ("room_id", "num_joined_members", "world_readable", "guest_can_join")


def server_of(user_or_alias: str) -> str:
    return user_or_alias.split(":", 1)[1]


def clean_profile(answer: JsonDict, field: str | None) -> JsonDict:
    """A remote profile as we pass it on: only the asked field when there is one, no
    nulls, and ``displayname`` / ``avatar_url`` only when they are strings."""
    profile = {k: v for k, v in answer.items() if v is not None}
    for key in ("displayname", "avatar_url"):
        if key in profile and not isinstance(profile[key], str):
            del profile[key]
    if field is not None:
        return {field: profile[field]} if field in profile else {}
    return profile


def clean_entry(entry: Any) -> JsonDict | None:
    """A remote public room entry with only well-typed spec fields; None when a
    required one is missing or wrong."""
    if not isinstance(entry, dict):
        return None
    cleaned: JsonDict = {}
    for key, kind in _ENTRY_FIELDS.items():
        value = entry.get(key)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            cleaned[key] = value
    if any(key not in cleaned for key in _REQUIRED_ENTRY_FIELDS):
        return None
    return cleaned


def clean_room_list(answer: JsonDict) -> JsonDict:
    """A remote ``/publicRooms`` answer, checked: a 502 when ``chunk`` is not a list."""
    chunk = answer.get("chunk")
    if not isinstance(chunk, list):
        raise MatrixError(502, Codes.UNKNOWN, "Bad room list from the other server")
    entries = [e for e in (clean_entry(raw) for raw in chunk) if e is not None]
    result: JsonDict = {"chunk": entries}
    for key in ("next_batch", "prev_batch"):
        if isinstance(answer.get(key), str):
            result[key] = answer[key]
    estimate = answer.get("total_room_count_estimate")
    if isinstance(estimate, int) and not isinstance(estimate, bool) and estimate >= 0:
        result["total_room_count_estimate"] = estimate
    return result


def _relayed_error(e: FederationRequestError, what: str) -> MatrixError:
    if e.code == 404:
        return MatrixError(404, Codes.NOT_FOUND, f"{what} not found")
    if e.code == 403:
        return MatrixError(403, Codes.FORBIDDEN, e.message or f"{what} is not available")
    if e.code == 504:
        return MatrixError(504, Codes.UNKNOWN, f"Timed out fetching {what.lower()}")
    return MatrixError(502, Codes.UNKNOWN, f"Failed to fetch {what.lower()}")


def _not_implemented(e: FederationRequestError) -> bool:
    return e.code in (404, 405) or e.errcode in (Codes.UNRECOGNIZED, Codes.NOT_FOUND)


class FederationQueries:
    """Profiles and public room lists of other servers (``query/profile``,
    ``publicRooms``), for ``ProfileHandler`` and ``RoomDirectory``."""

    def __init__(self, client: FederationClient, clock: Clock) -> None:
        self._client = client
        self._clock = clock
        self._room_lists: OrderedDict[tuple[str, PublicRoomsQuery], tuple[float, JsonDict]] = (
            OrderedDict()
        )

    async def query_profile(self, user_id: str, field: str | None) -> JsonDict:
        args: dict[str, str | list[str]] = {"user_id": user_id}
        if field is not None:
            args["field"] = field
        try:
            answer = await self._client.get_json(
                server_of(user_id),
                "/_matrix/federation/v1/query/profile",
                args,
                timeout_s=PROFILE_TIMEOUT_S,
                max_body_bytes=PROFILE_MAX_BYTES,
            )
        except FederationRequestError as e:
            logger.info("Profile query for %s failed: %s", user_id, e)
            raise _relayed_error(e, "Profile") from None
        return clean_profile(answer, field)

    async def public_rooms(self, server: str, query: PublicRoomsQuery) -> JsonDict:
        """A page of ``server``'s list. With a filter it is asked with ``POST``
        (MSC2197); a server that does not know that gets a ``GET`` of its whole list,
        filtered and paged here (as Synapse falls back)."""
        try:
            if not query.has_filter:
                return await self._cached_rooms(server, query)
            try:
                return clean_room_list(await self._post_rooms(server, query))
            except FederationRequestError as e:
                if not _not_implemented(e):
                    raise
            unfiltered = PublicRoomsQuery(
                include_all_networks=query.include_all_networks,
                third_party_instance_id=query.third_party_instance_id,
            )
            everything = clean_room_list(await self._get_rooms(server, unfiltered))
            kept = [e for e in everything["chunk"] if entry_matches(e, query)]
            return paginate(kept, query.limit, query.since)
        except FederationRequestError as e:
            logger.info("Room list of %s failed: %s", server, e)
            raise _relayed_error(e, "Room list") from None

    async def _cached_rooms(self, server: str, query: PublicRoomsQuery) -> JsonDict:
        key = (server, query)
        now = self._clock.seconds()
        while self._room_lists:
            oldest_key, (fetched, _) = next(iter(self._room_lists.items()))
            if now - fetched < ROOM_LIST_CACHE_S and len(self._room_lists) <= ROOM_LIST_CACHE_SIZE:
                break
            del self._room_lists[oldest_key]
        hit = self._room_lists.get(key)
        if hit is not None:
            return copy.deepcopy(hit[1])
        page = clean_room_list(await self._get_rooms(server, query))
        self._room_lists[key] = (self._clock.seconds(), page)
        return copy.deepcopy(page)

    async def _get_rooms(self, server: str, query: PublicRoomsQuery) -> JsonDict:
        args: dict[str, str | list[str]] = {
            "include_all_networks": "true" if query.include_all_networks else "false"
        }
        if query.limit:
            args["limit"] = str(query.limit)
        if query.since is not None:
            args["since"] = query.since
        if query.third_party_instance_id is not None:
            args["third_party_instance_id"] = query.third_party_instance_id
        return await self._client.get_json(
            server,
            "/_matrix/federation/v1/publicRooms",
            args,
            timeout_s=ROOM_LIST_TIMEOUT_S,
            max_body_bytes=ROOM_LIST_MAX_BYTES,
        )

    async def _post_rooms(self, server: str, query: PublicRoomsQuery) -> JsonDict:
        search: JsonDict = {}
        if query.search_term:
            search["generic_search_term"] = query.search_term
        if query.room_types is not None:
            search["room_types"] = list(query.room_types)
        body: JsonDict = {"include_all_networks": query.include_all_networks, "filter": search}
        if query.limit:
            body["limit"] = query.limit
        if query.since is not None:
            body["since"] = query.since
        if query.third_party_instance_id is not None:
            body["third_party_instance_id"] = query.third_party_instance_id
        answer = await self._client.post_json(
            server,
            "/_matrix/federation/v1/publicRooms",
            body,
            timeout_s=ROOM_LIST_TIMEOUT_S,
            max_body_bytes=ROOM_LIST_MAX_BYTES,
        )
        if not isinstance(answer, dict):
            raise FederationRequestError(server, 502, None, "Expected a JSON object")
        return answer
