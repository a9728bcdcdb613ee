"""Admin jobs that take a while: purging a room's history, deleting a room.

Each job is a row of ``admin_jobs`` (storage/admin_jobs.py) written before its id is
handed out; it then runs in the background and its status moves scheduled -> active ->
complete | failed. A job found unfinished at start-up (the server stopped under it) is
run again: both purges are idempotent, and a room deletion whose shutdown finished
(its result is stored) goes straight to the purge.

Invariants:
- A room's jobs run one after the other, in the order they were created.
- A purge changes the room's graph under ``RoomCache.lock(room_id)`` after the
  persister has committed everything already applied, like backfill: no event is
  built on, or persisted across, a half-purged room. Memory follows in the same turn
  (``LiveRoom.drop_from_timeline``; a purged room leaves the caches), and unread
  counts are read again without the purged events' push actions.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.internet import defer

from homeserver.clock import Clock, now_ms
from homeserver.errors import Codes, MatrixError
from homeserver.push.counts import UnreadCounts
from homeserver.requester import Requester
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.persister import EventPersister
from homeserver.rooms.room_cache import RoomCache
from homeserver.rooms.shutdown import DEFAULT_MESSAGE, DEFAULT_ROOM_NAME, RoomShutdown
from storage.admin_jobs import ACTIVE, COMPLETE, FAILED, SCHEDULED, AdminJob
from storage.purge import PurgeRefused
from storage.storage import Storage

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

PURGE_HISTORY = "purge_history"
DELETE_ROOM = "shutdown_and_purge_room"

_ID_ALPHABET = string.ascii_letters


class JobFailed(Exception):
    """A job stopped for a reason worth telling the admin (its ``error``)."""


class RoomPurger:
    def __init__(
        self,
        storage: Storage,
        rooms: RoomCache,
        persister: EventPersister,
        memberships: MembershipCache,
        shutdown: RoomShutdown,
        counts: UnreadCounts,
        clock: Clock,
        server_name: str,
    ) -> None:
        self._storage = storage
        self._rooms = rooms
        self._persister = persister
        self._memberships = memberships
        self._shutdown = shutdown
        self._counts = counts
        self._clock = clock
        self._server_name = server_name
        self._room_locks: dict[str, defer.DeferredLock] = {}
        self._running: set[defer.Deferred[None]] = set()
        # Jobs of other kinds run on this machinery (``add_action``), by action name.
        self._actions: dict[str, Callable[[AdminJob], Awaitable[None]]] = {}

    def add_action(self, action: str, run: Callable[[AdminJob], Awaitable[None]]) -> None:
        """Run jobs of ``action`` with ``run`` (stored, resumed, one at a time per
        subject like the purges). Register before ``resume``."""
        self._actions[action] = run

    async def schedule(self, action: str, subject: str, params: JsonDict) -> str:
        """Store a job of a registered action and start it; its id. ``subject`` (the
        ``room_id`` column) serialises jobs: a room, or a user for user-wide jobs."""
        assert action in self._actions
        return await self._schedule(action, subject, params)

    # Starting jobs -----------------------------------------------------------

    async def start_purge_history(self, room_id: str, depth: int, delete_local_events: bool) -> str:
        """Purge the room's events below ``depth`` in the background; the job id."""
        params = {"depth": depth, "delete_local_events": delete_local_events}
        return await self._schedule(PURGE_HISTORY, room_id, params)

    async def start_delete_room(
        self,
        admin: Requester,
        room_id: str,
        *,
        new_room_user_id: str | None,
        room_name: str | None,
        message: str | None,
        block: bool,
        purge: bool,
        force_purge: bool,
    ) -> str:
        """Shut the room down, then (``purge``) delete it from the database."""
        if await self.delete_jobs(room_id, only_active=True):
            raise MatrixError(400, Codes.UNKNOWN, f"Purge already in progress for {room_id}")
        if new_room_user_id is not None and new_room_user_id.partition(":")[2] != self._server_name:
            raise MatrixError(400, Codes.UNKNOWN, f"User must be our own: {new_room_user_id}")
        params = {
            "requester_user_id": admin.user_id,
            "new_room_user_id": new_room_user_id,
            "new_room_name": room_name,
            "message": message,
            "block": block,
            "purge": purge,
            "force_purge": force_purge,
        }
        return await self._schedule(DELETE_ROOM, room_id, params)

    async def purge_point(self, room_id: str, event_id: str | None, ts: int | None) -> int:
        """The depth below which a purge deletes: that of ``event_id``, or of the first
        event after ``ts`` (Synapse's answers when there is none)."""
        if event_id is not None:
            event = await self._storage.events.get_event(event_id)
            if event is None:
                raise MatrixError(404, Codes.NOT_FOUND, f"Could not find event {event_id}")
            if event.room_id != room_id:
                raise MatrixError(400, Codes.UNKNOWN, "Event is for wrong room.")
            return event.depth
        assert ts is not None
        point = await self._storage.purge.find_purge_point_for_ts(room_id, ts)
        if point is None:
            raise MatrixError(404, Codes.NOT_FOUND, "there is no event to be purged")
        return point[0]

    async def _schedule(self, action: str, room_id: str, params: JsonDict) -> str:
        job_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
        await self._storage.admin_jobs.create(job_id, action, room_id, params, now_ms(self._clock))
        job = await self._storage.admin_jobs.get(job_id)
        assert job is not None
        self._spawn(job)
        logger.info("[purge] %s of %s scheduled as %s", action, room_id, job_id)
        return job_id

    async def resume(self) -> None:
        """Run again the jobs a stop cut short (at start-up)."""
        for job in await self._storage.admin_jobs.unfinished():
            logger.info("[purge] resuming %s (%s of %s)", job.job_id, job.action, job.room_id)
            self._spawn(job)

    async def stop(self) -> None:
        """Let running jobs finish their current step (a stop mid-job resumes it later)."""
        running = list(self._running)
        if running:
            await defer.DeferredList(running, consumeErrors=True)

    def _spawn(self, job: AdminJob) -> None:
        d = defer.ensureDeferred(self._run(job))
        self._running.add(d)
        d.addBoth(lambda _: self._running.discard(d))

    # Reading jobs ------------------------------------------------------------

    async def get_job(self, job_id: str) -> AdminJob | None:
        return await self._storage.admin_jobs.get(job_id)

    async def delete_jobs(self, room_id: str, only_active: bool = False) -> list[AdminJob]:
        statuses: tuple[str, ...] = (SCHEDULED, ACTIVE)
        if not only_active:
            statuses += (COMPLETE, FAILED)
        return await self._storage.admin_jobs.for_room(room_id, (DELETE_ROOM,), statuses)

    # Running jobs ------------------------------------------------------------

    async def _run(self, job: AdminJob) -> None:
        lock = self._room_locks.setdefault(job.room_id, defer.DeferredLock())
        await lock.acquire()
        jobs = self._storage.admin_jobs
        try:
            await jobs.update(job.job_id, now_ms(self._clock), status=ACTIVE)
            if job.action == PURGE_HISTORY:
                await self.purge_history(
                    job.room_id,
                    int(job.params["depth"]),
                    bool(job.params["delete_local_events"]),
                )
            elif job.action == DELETE_ROOM:
                await self._delete_room(job)
            elif job.action in self._actions:
                await self._actions[job.action](job)
            else:
                raise JobFailed(f"Unknown job {job.action}")
            await jobs.update(job.job_id, now_ms(self._clock), status=COMPLETE)
            logger.info("[purge] %s complete", job.job_id)
        except Exception as e:
            if isinstance(e, (JobFailed, PurgeRefused)):
                error = str(e)
                logger.info("[purge] %s failed: %s", job.job_id, error)
            elif isinstance(e, MatrixError):
                error = e.message
                logger.info("[purge] %s failed: %s", job.job_id, error)
            else:
                error = repr(e)
                logger.exception("[purge] %s failed", job.job_id)
            try:
                await jobs.update(job.job_id, now_ms(self._clock), status=FAILED, error=error)
            except Exception:
                logger.exception("[purge] could not record the failure of %s", job.job_id)
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._room_locks.pop(job.room_id, None)

    async def _delete_room(self, job: AdminJob) -> None:
        params = job.params
        room_id = job.room_id
        if job.result is None:
            admin = Requester(str(params["requester_user_id"]), None, None, is_admin=True)
            try:
                result = await self._shutdown.shutdown(
                    admin,
                    room_id,
                    new_room_user_id=params.get("new_room_user_id"),
                    room_name=params.get("new_room_name") or DEFAULT_ROOM_NAME,
                    message=params.get("message") or DEFAULT_MESSAGE,
                    block=bool(params.get("block")),
                )
            except MatrixError as e:
                if e.errcode != Codes.NOT_FOUND:
                    raise
                # A room we no longer hold (purged already, or never here): nothing
                # to shut down, as Synapse answers.
                result = {
                    "kicked_users": [],
                    "failed_to_kick_users": [],
                    "local_aliases": [],
                    "new_room_id": None,
                }
            await self._storage.admin_jobs.update(job.job_id, now_ms(self._clock), result=result)
        if params.get("purge", True):
            await self.purge_room(room_id, force=bool(params.get("force_purge")))

    async def purge_history(self, room_id: str, depth: int, delete_local_events: bool) -> None:
        lock = self._rooms.lock(room_id)
        await lock.acquire()
        try:
            await self._persister.wait_idle()
            await self._counts.flush()  # push actions of what was persisted are stored
            purged = await self._storage.purge.purge_history(
                room_id, depth, delete_local_events, self._server_name
            )
            room = self._rooms.get_if_loaded(room_id)
            if room is not None:
                room.drop_from_timeline(purged.deleted | purged.hidden)
            self._memberships.history_changed()
        finally:
            lock.release()
        await self._counts.reload_room(room_id)  # their push actions are gone

    async def purge_room(self, room_id: str, force: bool) -> None:
        """Delete the room from the database; refused while local users are joined
        (unless ``force``), as Synapse."""
        lock = self._rooms.lock(room_id)
        await lock.acquire()
        try:
            await self._persister.wait_idle()
            room = await self._rooms.get(room_id)
            if room is not None and not force:
                suffix = f":{self._server_name}"
                if any(u.endswith(suffix) for u in room.joined_members()):
                    raise MatrixError(400, Codes.UNKNOWN, "Users are still joined to this room")
            await self._storage.purge.purge_room(room_id)
            self._rooms.invalidate(room_id)
            self._memberships.drop_room(room_id)
        finally:
            lock.release()
