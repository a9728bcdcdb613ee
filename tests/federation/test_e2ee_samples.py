"""Synapse's E2EE federation traffic as test vectors: its device list update EDU, its
/user/devices answer and its to-device EDU are understood as sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted

from federation.e2ee import parse_device_list_update, parse_user_devices
from tests.support.client import Client
from tests.support.samples import SAMPLES, samples_missing_reason
from tests.support.server import make_config_dict, start_server

pytestmark = pytest.mark.skipif(
    samples_missing_reason() is not None, reason=samples_missing_reason() or ""
)

ALICE = "@alice_c6b4a242e:127.0.0.1:38448"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / name).read_text())


def test_synapse_device_list_update_parses() -> None:
    content = sample("edu_m_device_list_update.json")["edu"]["content"]
    update = parse_device_list_update(content)
    assert update is not None
    assert (update.user_id, update.device_id, update.stream_id) == (ALICE, "QTAWLAXPFQ", 4)
    assert update.prev_ids == ()  # nothing to chain to: the receiver resyncs
    assert update.device is not None and update.device.keys == content["keys"]
    deleted = parse_device_list_update({**content, "deleted": True, "keys": None})
    assert deleted is not None and deleted.device is None
    assert parse_device_list_update({**content, "stream_id": "4"}) is None
    assert parse_device_list_update({**content, "prev_id": ["x"]}) is None


def test_device_keys_are_kept_unless_they_name_another_user_or_device() -> None:
    """As Synapse (SyTest sends ``{"device_keys": {}}``): any object is cached, but keys
    claiming another user or device are not."""
    base = {"user_id": ALICE, "device_id": "D", "stream_id": 2, "prev_id": [1]}
    odd = parse_device_list_update({**base, "keys": {"device_keys": {}}})
    assert odd is not None and odd.device is not None
    assert odd.device.keys == {"device_keys": {}}
    for other in ({"user_id": "@mallory:evil"}, {"device_id": "OTHER"}):
        update = parse_device_list_update({**base, "keys": {"keys": {}, **other}})
        assert update is not None and update.device is not None and update.device.keys is None
    listing = {
        "user_id": ALICE,
        "stream_id": 1,
        "devices": [
            {"device_id": "D", "keys": {"device_keys": {}}},
            {"device_id": "E", "keys": {"device_id": "D"}},
        ],
    }
    remote = parse_user_devices(ALICE, listing)
    assert remote.devices["D"].keys == {"device_keys": {}}
    assert remote.devices["E"].keys is None


def test_synapse_user_devices_answer_parses() -> None:
    body = sample("exchange_get_fed_v1_user_devices.json")["response_body"]
    remote = parse_user_devices(ALICE, body)
    assert remote.stream_id == 4
    assert set(remote.devices) == {"QTAWLAXPFQ"}
    assert remote.devices["QTAWLAXPFQ"].keys == body["devices"][0]["keys"]
    assert remote.master_key is None and remote.self_signing_key is None  # sent as null
    with pytest.raises(ValueError):
        parse_user_devices("@someone:else", body)


@pytest_twisted.ensureDeferred
async def test_synapse_to_device_edu_is_delivered_once(
    database: dict[str, Any], tmp_path: Any
) -> None:
    edu = sample("edu_m_direct_to_device.json")
    content = edu["edu"]["content"]
    origin = edu["transaction_origin"]
    (bob_id,) = content["messages"]
    (device_id,) = content["messages"][bob_id]
    server_name = bob_id.split(":", 1)[1]
    data_dir = str(tmp_path / "hs")
    server = await start_server(
        make_config_dict(data_dir, database, server_name=server_name), data_dir
    )
    try:
        bob = server.client()
        await bob.register(bob_id[1:].split(":")[0])
        assert (await bob.login(bob_id[1:].split(":")[0], device_id=device_id)).code == 200
        since = (await bob.get("/_matrix/client/v3/sync")).json["next_batch"]
        assert server.hs.federation is not None
        handle = server.hs.federation.transactions.edu_handlers["m.direct_to_device"]
        await handle(origin, content)
        await handle(origin, content)  # resent: same message_id
        await handle("127.0.0.1:1", {**content, "message_id": "other"})  # not the sender's server
        events = await drain(bob, since)
        assert events == [
            {
                "type": content["type"],
                "sender": content["sender"],
                "content": {"nonce": "td248ea2be"},
            }
        ]
    finally:
        await server.stop()


async def drain(client: Client, since: str) -> list[Any]:
    events: list[Any] = []
    for _ in range(3):
        resp = await client.get("/_matrix/client/v3/sync", params={"since": since, "timeout": "0"})
        since = resp.json["next_batch"]
        events += resp.json.get("to_device", {}).get("events", [])
    return events
