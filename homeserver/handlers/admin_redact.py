"""Redacting a user's events in bulk (Synapse's ``POST /_synapse/admin/v1/user/{userId}/redact``).

A job of the admin job machinery (``RoomPurger.add_action``): stored before its id is
handed out, resumed after a restart (events already redacted are not found again, so a
resumed job does not redact twice), one at a time per user. Each redaction is sent like
the user's own ``/redact``: by the user themselves (puppeted) when local, else by the
admin, or by the admin whenever ``use_admin`` asks; a redaction refused (the sender left
the room, lacks the power level...) is recorded in ``failed_redactions`` with its error
and the job goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from homeserver.clock import Clock, now_ms
from homeserver.errors import MatrixError
from homeserver.requester import Requester
from homeserver.rooms.handler import RoomHandler
from homeserver.rooms.memberships import MembershipCache
from homeserver.rooms.purge import RoomPurger
from storage.admin_jobs import AdminJob, AdminJobsStore
from storage.user_admin import UserAdminStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]

REDACT_USER = "redact_all_events"

# Synapse's default: how many of the user's newest events are looked at per room.
DEFAULT_LIMIT = 1000


class UserRedactor:
    def __init__(
        self,
        jobs: RoomPurger,
        job_store: AdminJobsStore,
        users: UserAdminStore,
        rooms: RoomHandler,
        memberships: MembershipCache,
        server_name: str,
        clock: Clock,
    ) -> None:
        self._clock = clock
        self._jobs = jobs
        self._job_store = job_store
        self._users = users
        self._rooms = rooms
        self._memberships = memberships
        self._server_name = server_name
        jobs.add_action(REDACT_USER, self._run)

    async def start(
        self,
        admin: Requester,
        user_id: str,
        rooms: list[str],
        *,
        reason: str | None,
        limit: int | None,
        use_admin: bool,
        after_ts: int | None,
        before_ts: int | None,
    ) -> str:
        """Schedule the job; its id. No rooms: every room the user has a membership in
        (joined, left or banned: where they may have sent events)."""
        if not rooms:
            memberships = await self._memberships.rooms_for_user(user_id)
            rooms = sorted(r for r, row in memberships.items() if row.membership != "invite")
        params = {
            "user_id": user_id,
            "rooms": rooms,
            "admin_user_id": admin.user_id,
            "reason": reason,
            "limit": limit or DEFAULT_LIMIT,
            "use_admin": use_admin,
            "after_ts": after_ts,
            "before_ts": before_ts,
        }
        return await self._jobs.schedule(REDACT_USER, user_id, params)

    async def get_job(self, job_id: str) -> AdminJob | None:
        job = await self._job_store.get(job_id)
        return job if job is not None and job.action == REDACT_USER else None

    async def _run(self, job: AdminJob) -> None:
        p = job.params
        user_id = str(p["user_id"])
        is_local = user_id.partition(":")[2] == self._server_name
        sender_id = user_id if is_local and not p["use_admin"] else str(p["admin_user_id"])
        sender = Requester(sender_id, None, None)
        failed: dict[str, str] = dict((job.result or {}).get("failed_redactions", {}))
        for room_id in p["rooms"]:
            event_ids = await self._users.events_to_redact(
                user_id, room_id, int(p["limit"]), p["after_ts"], p["before_ts"]
            )
            for event_id in event_ids:
                if event_id in failed:
                    continue  # a resumed job does not try again what failed
                try:
                    await self._rooms.redact(sender, room_id, event_id, p["reason"], None)
                except MatrixError as e:
                    failed[event_id] = e.message
                except Exception as e:
                    logger.exception("Redacting %s for job %s", event_id, job.job_id)
                    failed[event_id] = repr(e)
            # Progress survives a restart: what failed is not retried.
            await self._job_store.update(
                job.job_id, now_ms(self._clock), result={"failed_redactions": failed}
            )
        logger.info("Redaction job %s done: %d failed", job.job_id, len(failed))
