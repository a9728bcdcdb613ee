"""Rooms two users are both joined to (MSC2666), paged by room id as Synapse does:
``next_batch`` is the first room id of the next page, so pages never overlap and a
room joined or left meanwhile moves no other room between pages."""

from __future__ import annotations

from collections.abc import Iterable

PAGE_SIZE = 100


def mutual_rooms_page(
    mine: Iterable[str], theirs: Iterable[str], from_room: str | None, limit: int = PAGE_SIZE
) -> tuple[list[str], str | None]:
    """(this page's room ids, sorted; the next page's first room id or None)."""
    shared = sorted(set(mine) & set(theirs))
    if from_room is not None:
        shared = [r for r in shared if r >= from_room]
    page = shared[:limit]
    return page, shared[limit] if len(shared) > limit else None
