"""Room tags: room account data ``m.tag`` = ``{"tags": {tag: {"order": n, ...}}}``.

Invariants: tags live only in ``storage.account_data`` (so changes reach /sync room
account data through its stream); one change per (user, room) runs at a time, so two
concurrent tag edits never lose one another; a tag name is at most 255 bytes and an
``order``, when given, is a number.
"""

from __future__ import annotations

from typing import Any

from homeserver.ephemeral.locks import KeyedLock
from homeserver.errors import Codes, MatrixError
from storage.account_data import AccountDataStore

JsonDict = dict[str, Any]

TAG_TYPE = "m.tag"
MAX_TAG_BYTES = 255


class TagsHandler:
    def __init__(self, account_data: AccountDataStore) -> None:
        self._account_data = account_data
        self._lock = KeyedLock()

    async def get_tags(self, user_id: str, room_id: str) -> JsonDict:
        content = await self._account_data.get(user_id, room_id, TAG_TYPE)
        tags = content.get("tags") if content else None
        return dict(tags) if isinstance(tags, dict) else {}

    @staticmethod
    def validate(tag: str, body: JsonDict) -> None:
        if not tag or len(tag.encode("utf-8")) > MAX_TAG_BYTES:
            raise MatrixError(
                400, Codes.INVALID_PARAM, f"A tag name must be 1 to {MAX_TAG_BYTES} bytes"
            )
        order = body.get("order")
        if "order" in body and (not isinstance(order, int | float) or isinstance(order, bool)):
            raise MatrixError(400, Codes.BAD_JSON, "'order' must be a number")

    async def add_tag(self, user_id: str, room_id: str, tag: str, body: JsonDict) -> None:
        self.validate(tag, body)
        async with self._lock((user_id, room_id)):
            tags = await self.get_tags(user_id, room_id)
            if tags.get(tag) == body:
                return
            tags[tag] = body
            await self._account_data.put(user_id, room_id, TAG_TYPE, {"tags": tags})

    async def remove_tag(self, user_id: str, room_id: str, tag: str) -> None:
        async with self._lock((user_id, room_id)):
            tags = await self.get_tags(user_id, room_id)
            if tag not in tags:
                return
            del tags[tag]
            await self._account_data.put(user_id, room_id, TAG_TYPE, {"tags": tags})
