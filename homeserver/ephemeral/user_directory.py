"""User directory search: who the searcher may find, matched and ranked.

Invariants: visibility is decided by the store (shared rooms, public or world-readable
rooms, no deactivated users; with ``search_all_users`` every local user and everyone in
our rooms). A result matches when every word of the search term is a
prefix of a word of the user id or display name, case-insensitively (Unicode case
folding). Results are ranked: exact name or localpart, then names or localparts that
start with the term, then other matches; then users sharing a room with the searcher,
then those with profile information.
"""

from __future__ import annotations

import re
from typing import Any

from storage.user_directory import DirectoryEntry, UserDirectoryStore

JsonDict = dict[str, Any]

DEFAULT_LIMIT = 10
MAX_LIMIT = 500

_WORD_SPLIT = re.compile(r"[^\w]+")


def words_of(text: str) -> list[str]:
    return [w for w in _WORD_SPLIT.split(text.casefold()) if w]


def _matches(entry: DirectoryEntry, words: list[str]) -> bool:
    tokens = words_of(entry.user_id) + words_of(entry.display_name or "")
    return all(any(t.startswith(w) for t in tokens) for w in words)


def _rank(entry: DirectoryEntry, term: str) -> tuple[Any, ...]:
    localpart = entry.user_id[1:].split(":", 1)[0].casefold()
    name = (entry.display_name or "").casefold()
    if term in (name, localpart):
        closeness = 0
    elif name.startswith(term) or localpart.startswith(term):
        closeness = 1
    else:
        closeness = 2
    return (
        closeness,
        not entry.shares_room,
        entry.display_name is None,
        entry.avatar_url is None,
        name or localpart,
        entry.user_id,
    )


class UserDirectoryHandler:
    def __init__(self, store: UserDirectoryStore, *, search_all_users: bool = False) -> None:
        self._store = store
        self._search_all_users = search_all_users

    async def search(self, searcher: str, search_term: str, limit: int) -> JsonDict:
        words = words_of(search_term)
        if not words:
            return {"results": [], "limited": False}
        # The SQL pre-filter is a superset: ASCII words as they are, lower-cased.
        sql_words = [w for w in _WORD_SPLIT.split(search_term.lower()) if w and w.isascii()]
        candidates = await self._store.search(
            searcher, sql_words, search_all_users=self._search_all_users
        )
        entries = [e for e in candidates if _matches(e, words)]
        term = search_term.strip().casefold().lstrip("@")
        entries.sort(key=lambda e: _rank(e, term))
        results = []
        for entry in entries[:limit]:
            result: JsonDict = {"user_id": entry.user_id}
            if entry.display_name is not None:
                result["display_name"] = entry.display_name
            if entry.avatar_url is not None:
                result["avatar_url"] = entry.avatar_url
            results.append(result)
        return {"results": results, "limited": len(entries) > limit}
