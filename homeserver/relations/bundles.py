"""Bundled aggregations: ``unsigned.m.relations`` of events served to a client.

Invariants:
- Only non-state events get aggregations (spec: state events do not, yet).
- ``m.replace``: the most recent *valid* replacement (same sender, same type, the
  original is neither a state event nor itself a replacement, and the replacement has
  ``m.new_content`` unless encrypted), as a whole client event; nothing when the
  original is redacted. The original's content is never replaced.
- ``m.thread``: ``latest_event`` (with its own edit bundled), ``count`` and
  ``current_user_participated`` — the last one depends on the viewer, so bundles are
  computed per request and merged into a *copy* of the shared ``Event.client_dict``.
- ``m.reference``: ``{"chunk": [{"event_id": ...}]}``, oldest first.
- ``m.annotation`` is not aggregated (spec v1.7+).
- One ``get_aggregation_rows`` transaction and one ``get_events`` read per call (plus
  one more of each when thread summaries need their latest event's edit).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from homeserver.events.event import Event
from storage.relations import REFERENCE, REPLACE, THREAD, AggregationRows, relation_of
from storage.storage import Storage

JsonDict = dict[str, Any]


def with_relations(out: JsonDict, relations: JsonDict | None) -> JsonDict:
    """``out`` (a shared client dict: never mutated) with ``unsigned.m.relations``."""
    if not relations:
        return out
    copy = dict(out)
    unsigned = dict(copy.get("unsigned") or {})
    unsigned["m.relations"] = relations
    copy["unsigned"] = unsigned
    return copy


def _can_be_edited(original: Event) -> bool:
    if original.is_state() or original.redacted_by is not None:
        return False
    relation = relation_of(original.content)
    return relation is None or relation.rel_type != REPLACE


def _valid_edit(original: Event, edit: Event) -> bool:
    if edit.is_state() or edit.redacted_by is not None or edit.room_id != original.room_id:
        return False
    if edit.sender != original.sender or edit.type != original.type:
        return False
    return edit.type == "m.room.encrypted" or isinstance(edit.content.get("m.new_content"), dict)


class Aggregator:
    def __init__(self, storage: Storage) -> None:
        self._relations = storage.relations
        self._events = storage.events

    async def bundles(self, events: Sequence[Event], viewer: str) -> dict[str, JsonDict]:
        """event id -> ``m.relations`` content, for the events that have any."""
        return await self._bundles(events, viewer, with_threads=True)

    async def _bundles(
        self, events: Sequence[Event], viewer: str, *, with_threads: bool
    ) -> dict[str, JsonDict]:
        parents = {
            ev.event_id: ev for ev in events if not ev.is_state() and ev.rejected_reason is None
        }
        if not parents:
            return {}
        rows = await self._relations.get_aggregation_rows(list(parents), viewer)
        if not (rows.edits or rows.thread_counts or rows.references):
            return {}
        edits = await self._latest_edits(parents, rows)
        out: dict[str, JsonDict] = {}
        for event_id, edit in edits.items():
            out.setdefault(event_id, {})[REPLACE] = edit.client_dict()
        for parent_id, refs in rows.references.items():
            out.setdefault(parent_id, {})[REFERENCE] = {"chunk": [{"event_id": e} for e in refs]}
        if with_threads and rows.thread_counts:
            await self._add_threads(parents, rows, viewer, out)
        return out

    async def _latest_edits(
        self, parents: dict[str, Event], rows: AggregationRows
    ) -> dict[str, Event]:
        """The most recent valid edit of each parent (candidates are newest first)."""
        pending = {
            parent_id: [
                c.event_id
                for c in candidates
                if c.sender == parents[parent_id].sender and c.type == parents[parent_id].type
            ]
            for parent_id, candidates in rows.edits.items()
            if parent_id in parents and _can_be_edited(parents[parent_id])
        }
        chosen: dict[str, Event] = {}
        while pending:
            heads = {parent_id: ids[0] for parent_id, ids in pending.items() if ids}
            if not heads:
                break
            loaded = await self._events.get_events(heads.values())
            for parent_id, edit_id in heads.items():
                edit = loaded.get(edit_id)
                if edit is not None and _valid_edit(parents[parent_id], edit):
                    chosen[parent_id] = edit
                    pending.pop(parent_id)
                else:
                    pending[parent_id] = pending[parent_id][1:]
            pending = {p: ids for p, ids in pending.items() if ids}
        return chosen

    async def _add_threads(
        self,
        parents: dict[str, Event],
        rows: AggregationRows,
        viewer: str,
        out: dict[str, JsonDict],
    ) -> None:
        latest_ids = {
            root: rows.thread_latest[root]
            for root in rows.thread_counts
            if root in rows.thread_latest
        }
        latest = await self._events.get_events(latest_ids.values())
        latest_events = [ev for ev in latest.values()]
        nested = await self._bundles(latest_events, viewer, with_threads=False)
        for root, count in rows.thread_counts.items():
            latest_event = latest.get(latest_ids.get(root, ""))
            if latest_event is None:
                continue
            out.setdefault(root, {})[THREAD] = {
                "latest_event": with_relations(
                    latest_event.client_dict(), nested.get(latest_event.event_id)
                ),
                "count": count,
                "current_user_participated": (
                    parents[root].sender == viewer or root in rows.participated
                ),
            }
