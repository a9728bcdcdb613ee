"""rate_limited: false exempts a service's users from rate limits; its sender never is."""

from __future__ import annotations

from typing import Any

import pytest
import pytest_twisted

from tests.appservice.helpers import SENDER, V3, as_request, assert_error, puppet
from tests.support.client import q
from tests.support.server import RunningServer

TIGHT = {"per_second": 0.001, "burst_count": 3}


async def send_many(server: RunningServer, user_id: str, room_id: str, count: int) -> list[int]:
    codes = []
    for i in range(count):
        resp = await as_request(
            server,
            "PUT",
            f"{V3}/rooms/{q(room_id)}/send/m.room.message/{user_id}-{i}",
            {"msgtype": "m.text", "body": str(i)},
            user_id=user_id,
        )
        codes.append(resp.code)
    return codes


async def room_with(server: RunningServer, user_id: str) -> str:
    resp = await as_request(server, "POST", f"{V3}/createRoom", {"preset": "public_chat"})
    assert resp.code == 200, resp
    room_id = str(resp.json["room_id"])
    resp = await as_request(server, "POST", f"{V3}/join/{q(room_id)}", {}, user_id=user_id)
    assert resp.code == 200, resp
    return room_id


class TestNotRateLimited:
    @pytest.fixture
    def registration_overrides(self) -> dict[str, Any]:
        return {"rate_limited": False}

    @pytest.fixture
    def hs_overrides(self) -> dict[str, Any]:
        return {"rc_message": TIGHT}

    @pytest_twisted.ensureDeferred
    async def test_users_of_the_service_are_not_limited(self, server: RunningServer) -> None:
        user_id = await puppet(server, "_bridge_fast")
        room_id = await room_with(server, user_id)
        assert await send_many(server, user_id, room_id, 10) == [200] * 10

    @pytest_twisted.ensureDeferred
    async def test_normal_users_still_are(self, server: RunningServer) -> None:
        alice = server.client()
        await alice.register("alice")
        codes = []
        for _ in range(6):
            resp = await alice.post(f"{V3}/createRoom", {})
            codes.append(resp.code)
        assert 429 in codes


class TestRateLimited:
    @pytest.fixture
    def hs_overrides(self) -> dict[str, Any]:
        return {"rc_message": TIGHT}

    @pytest_twisted.ensureDeferred
    async def test_users_of_a_rate_limited_service_are_limited(self, server: RunningServer) -> None:
        user_id = await puppet(server, "_bridge_slow")
        room_id = await room_with(server, user_id)
        codes = await send_many(server, user_id, room_id, 6)
        assert codes[:3] == [200] * 3
        assert 429 in codes
        resp = await as_request(
            server,
            "PUT",
            f"{V3}/rooms/{q(room_id)}/send/m.room.message/again",
            {"msgtype": "m.text", "body": "x"},
            user_id=user_id,
        )
        assert_error(resp, 429, "M_LIMIT_EXCEEDED")

    @pytest_twisted.ensureDeferred
    async def test_the_sender_is_never_limited(self, server: RunningServer) -> None:
        resp = await as_request(server, "POST", f"{V3}/createRoom", {})
        room_id = resp.json["room_id"]
        assert await send_many(server, SENDER, room_id, 8) == [200] * 8
