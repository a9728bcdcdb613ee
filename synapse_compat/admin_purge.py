"""Synapse's admin API for long jobs on rooms (homeserver/rooms/purge.py does them):

- ``POST /_synapse/admin/v1/purge_history/{roomId}[/{eventId}]`` and
  ``GET /_synapse/admin/v1/purge_history_status/{purgeId}``;
- ``DELETE /_synapse/admin/v2/rooms/{roomId}``,
  ``GET /_synapse/admin/v2/rooms/{roomId}/delete_status`` and
  ``GET /_synapse/admin/v2/rooms/delete_status/{deleteId}``.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from homeserver.errors import Codes, MatrixError
from homeserver.events.format import is_valid_room_id
from homeserver.handlers.auth import AuthHandler
from homeserver.http.server import JsonResource
from homeserver.http.servlet import field, parse_json_body
from homeserver.requester import Requester
from homeserver.rooms.purge import DELETE_ROOM, PURGE_HISTORY, RoomPurger
from storage.admin_jobs import COMPLETE, FAILED, AdminJob

JsonDict = dict[str, Any]

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"


def _delete_job_json(job: AdminJob) -> JsonDict:
    return {
        "delete_id": job.job_id,
        "room_id": job.room_id,
        "status": job.status,
        "shutdown_room": job.result,
    }


def _check_room_id(room_id: str) -> None:
    if not is_valid_room_id(room_id):
        raise MatrixError(400, Codes.INVALID_PARAM, f"{room_id} is not a legal room ID")


class AdminPurgeServlets:
    def __init__(self, auth: AuthHandler, purger: RoomPurger) -> None:
        self._auth = auth
        self._purger = purger

    def register(self, resource: JsonResource) -> None:
        resource.register("POST", f"{V1}/purge_history/{{roomId}}", self.on_purge)
        resource.register("POST", f"{V1}/purge_history/{{roomId}}/{{eventId}}", self.on_purge)
        resource.register("GET", f"{V1}/purge_history_status/{{purgeId}}", self.on_purge_status)
        resource.register("DELETE", f"{V2}/rooms/{{roomId}}", self.on_delete_room)
        resource.register("GET", f"{V2}/rooms/{{roomId}}/delete_status", self.on_room_status)
        resource.register("GET", f"{V2}/rooms/delete_status/{{deleteId}}", self.on_delete_status)

    async def _admin(self, request: Request) -> Requester:
        requester = await self._auth.get_user_by_req(request)
        if not requester.is_admin:
            raise MatrixError(403, Codes.FORBIDDEN, "You are not a server admin")
        return requester

    async def on_purge(
        self, request: Request, roomId: str, eventId: str | None = None
    ) -> tuple[int, Any]:
        await self._admin(request)
        body = parse_json_body(request, allow_empty=True)
        delete_local = field(body, "delete_local_events", bool, default=False)
        event_id = eventId or field(body, "purge_up_to_event_id", str)
        ts: int | None = None
        if event_id is None:
            if "purge_up_to_ts" not in body:
                raise MatrixError(
                    400, Codes.BAD_JSON, "must specify purge_up_to_event_id or purge_up_to_ts"
                )
            ts = body["purge_up_to_ts"]
            if type(ts) is not int:
                raise MatrixError(400, Codes.BAD_JSON, "purge_up_to_ts must be an int")
        depth = await self._purger.purge_point(roomId, event_id, ts)
        purge_id = await self._purger.start_purge_history(roomId, depth, delete_local)
        return 200, {"purge_id": purge_id}

    async def on_purge_status(self, request: Request, purgeId: str) -> tuple[int, Any]:
        await self._admin(request)
        job = await self._purger.get_job(purgeId)
        if job is None or job.action != PURGE_HISTORY:
            raise MatrixError(404, Codes.NOT_FOUND, f"purge id '{purgeId}' not found")
        # Synapse shows a job not yet finished (scheduled or running) as active.
        result: JsonDict = {"status": job.status if job.status in (COMPLETE, FAILED) else "active"}
        if job.error:
            result["error"] = job.error
        return 200, result

    async def on_delete_room(self, request: Request, roomId: str) -> tuple[int, Any]:
        requester = await self._admin(request)
        body = parse_json_body(request)
        block = field(body, "block", bool, default=False)
        purge = field(body, "purge", bool, default=True)
        force_purge = field(body, "force_purge", bool, default=False)
        _check_room_id(roomId)
        delete_id = await self._purger.start_delete_room(
            requester,
            roomId,
            new_room_user_id=field(body, "new_room_user_id", str),
            room_name=field(body, "room_name", str),
            message=field(body, "message", str),
            block=block,
            purge=purge,
            force_purge=force_purge,
        )
        return 200, {"delete_id": delete_id}

    async def on_room_status(self, request: Request, roomId: str) -> tuple[int, Any]:
        await self._admin(request)
        _check_room_id(roomId)
        jobs = await self._purger.delete_jobs(roomId)
        if not jobs:
            raise MatrixError(404, Codes.NOT_FOUND, f"No delete task for room_id '{roomId}' found")
        return 200, {"results": [_delete_job_json(job) for job in jobs]}

    async def on_delete_status(self, request: Request, deleteId: str) -> tuple[int, Any]:
        await self._admin(request)
        job = await self._purger.get_job(deleteId)
        if job is None or job.action != DELETE_ROOM:
            raise MatrixError(404, Codes.NOT_FOUND, f"delete id '{deleteId}' not found")
        return 200, _delete_job_json(job)
