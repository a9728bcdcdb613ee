"""/pushrules over real HTTP, the m.push_rules account data, and rules taking effect."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.ephemeral.helpers import (
    V3,
    assert_error,
    restart,
    send,
    shared_room,
    sync,
    user,
)
from tests.support.client import Client, q
from tests.support.server import RunningServer

RULES = f"{V3}/pushrules"


def rule_ids(ruleset: dict[str, Any], kind: str) -> list[str]:
    return [r["rule_id"] for r in ruleset[kind]]


def push_rules_data(body: dict[str, Any]) -> dict[str, Any] | None:
    for event in body["account_data"]["events"]:
        if event["type"] == "m.push_rules":
            return dict(event["content"])
    return None


async def put_rule(
    client: Client, kind: str, rule_id: str, body: dict[str, Any], **params: str
) -> Any:
    return await client.put(f"{RULES}/global/{kind}/{q(rule_id)}", body, params=params or None)


@pytest_twisted.ensureDeferred
async def test_default_rules_are_served(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await alice.get(f"{RULES}/")
    assert resp.code == 200, resp
    ruleset = resp.json["global"]
    assert rule_ids(ruleset, "override")[0] == ".m.rule.master"
    assert ".m.rule.is_user_mention" in rule_ids(ruleset, "override")
    assert ".m.rule.message" in rule_ids(ruleset, "underride")
    assert ruleset["content"] == ruleset["room"] == ruleset["sender"] == []
    mention = next(r for r in ruleset["override"] if r["rule_id"] == ".m.rule.is_user_mention")
    assert mention["conditions"][0]["value"] == alice.user_id

    glob = await alice.get(f"{RULES}/global/")
    assert glob.code == 200 and glob.json == ruleset, glob
    kind = await alice.get(f"{RULES}/global/underride/")
    assert kind.code == 200 and kind.json == ruleset["underride"], kind
    one = await alice.get(f"{RULES}/global/override/.m.rule.master")
    assert one.code == 200 and one.json["enabled"] is False and one.json["default"] is True, one


@pytest_twisted.ensureDeferred
async def test_add_place_change_and_delete_user_rules(server: RunningServer) -> None:
    alice = await user(server, "alice")
    resp = await put_rule(alice, "content", "cake", {"pattern": "cake", "actions": ["notify"]})
    assert resp.code == 200 and resp.json == {}, resp
    resp = await put_rule(
        alice, "content", "pie", {"pattern": "pie", "actions": ["notify"]}, after="cake"
    )
    assert resp.code == 200, resp
    resp = await put_rule(
        alice, "content", "tart", {"pattern": "tart", "actions": []}, before="cake"
    )
    assert resp.code == 200, resp
    ruleset = (await alice.get(f"{RULES}/global/")).json
    assert rule_ids(ruleset, "content") == ["tart", "cake", "pie"]
    cake = (await alice.get(f"{RULES}/global/content/cake")).json
    assert cake == {
        "rule_id": "cake",
        "default": False,
        "enabled": True,
        "pattern": "cake",
        "actions": ["notify"],
    }

    enabled = await alice.put(f"{RULES}/global/content/cake/enabled", {"enabled": False})
    assert enabled.code == 200, enabled
    got = await alice.get(f"{RULES}/global/content/cake/enabled")
    assert got.json == {"enabled": False}, got
    actions = await alice.put(
        f"{RULES}/global/content/cake/actions",
        {"actions": ["notify", {"set_tweak": "sound", "value": "bing"}]},
    )
    assert actions.code == 200, actions
    got = await alice.get(f"{RULES}/global/content/cake/actions")
    assert got.json == {"actions": ["notify", {"set_tweak": "sound", "value": "bing"}]}, got

    # Server-default rules can be disabled and given other actions, not deleted.
    master = await alice.put(f"{RULES}/global/override/.m.rule.master/enabled", {"enabled": True})
    assert master.code == 200, master
    assert (await alice.get(f"{RULES}/global/override/.m.rule.master")).json["enabled"] is True

    deleted = await alice.delete(f"{RULES}/global/content/pie")
    assert deleted.code == 200, deleted
    assert_error(await alice.get(f"{RULES}/global/content/pie"), 404, "M_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_push_rule_errors(server: RunningServer) -> None:
    alice = await user(server, "alice")
    assert_error(await put_rule(alice, "nonsense", "x", {"actions": []}), 400, "M_INVALID_PARAM")
    assert_error(await alice.get(f"{RULES}/global/override/nope"), 404, "M_NOT_FOUND")
    assert_error(await alice.delete(f"{RULES}/global/override/.m.rule.master"), 404, "M_NOT_FOUND")
    assert_error(
        await put_rule(alice, "override", ".m.rule.mine", {"actions": []}), 400, "M_INVALID_PARAM"
    )
    assert_error(await put_rule(alice, "override", "r", {}), 400, "M_BAD_JSON")
    assert_error(await put_rule(alice, "content", "r", {"actions": []}), 400, "M_BAD_JSON")
    assert_error(
        await put_rule(alice, "override", "r", {"actions": ["explode"]}), 400, "M_BAD_JSON"
    )
    assert_error(
        await put_rule(alice, "override", "r", {"actions": []}, before="missing"), 400, "M_UNKNOWN"
    )
    assert_error(
        await alice.put(f"{RULES}/global/override/.m.rule.master/enabled", {"enabled": "yes"}),
        400,
        "M_BAD_JSON",
    )
    assert_error(
        await alice.put(f"{RULES}/global/override/nope/actions", {"actions": []}),
        404,
        "M_NOT_FOUND",
    )
    assert_error(await alice.get(f"{RULES}/", token=False), 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_historical_actions_read_back_as_set(server: RunningServer) -> None:
    alice = await user(server, "alice")
    path = f"{RULES}/global/underride/.m.rule.message/actions"
    assert (await alice.put(path, {"actions": ["dont_notify"]})).code == 200
    assert (await alice.get(path)).json == {"actions": ["dont_notify"]}
    resp = await put_rule(alice, "sender", "@bob:example.com", {"actions": ["notify"]})
    assert resp.code == 200, resp
    path = f"{RULES}/global/sender/{q('@bob:example.com')}/actions"
    assert (await alice.put(path, {"actions": ["dont_notify"]})).code == 200
    assert (await alice.get(path)).json == {"actions": ["dont_notify"]}


@pytest_twisted.ensureDeferred
async def test_malformed_push_rule_paths_are_400(server: RunningServer) -> None:
    alice = await user(server, "alice")
    for path in ("/", "/not_a_scope/room/x", "/global", "/global/room", "/global/room/"):
        assert_error(await alice.put(f"{RULES}{path}", {}), 400, "M_UNRECOGNIZED")
    assert_error(
        await alice.put(f"{RULES}/global/override/.m.rule.master/not_an_attr", {"enabled": True}),
        400,
        "M_UNRECOGNIZED",
    )
    for path in ("/global", "/global/room", "/not_a_scope/", "/global/override/.m.rule.master/x"):
        assert_error(await alice.get(f"{RULES}{path}"), 400, "M_UNRECOGNIZED")
    assert_error(await alice.delete(f"{RULES}/global/room/"), 400, "M_UNRECOGNIZED")
    assert_error(await alice.get(f"{V3}/pushrules"), 404, "M_UNRECOGNIZED")
    assert_error(await alice.get(f"{RULES}/global", token=False), 401, "M_MISSING_TOKEN")


@pytest_twisted.ensureDeferred
async def test_push_rules_reach_sync_as_account_data(server: RunningServer) -> None:
    alice = await user(server, "alice")
    first = await sync(alice)
    data = push_rules_data(first)
    assert data is not None and rule_ids(data["global"], "override")[0] == ".m.rule.master"
    resp = await put_rule(alice, "room", "!some:test.local", {"actions": []})
    assert resp.code == 200, resp
    later = await sync(alice, first["next_batch"], timeout=2000)
    data = push_rules_data(later)
    assert data is not None
    assert rule_ids(data["global"], "room") == ["!some:test.local"]


@pytest_twisted.ensureDeferred
async def test_push_rules_survive_a_restart(
    server: RunningServer, tmp_path: Any, database: dict[str, Any]
) -> None:
    alice = await user(server, "alice")
    resp = await put_rule(alice, "sender", "@spam:test.local", {"actions": []})
    assert resp.code == 200, resp
    server = await restart(server, str(tmp_path), database)
    try:
        again = server.client()
        await again.login("alice")
        ruleset = (await again.get(f"{RULES}/global/")).json
        assert rule_ids(ruleset, "sender") == ["@spam:test.local"]
    finally:
        await server.stop()


async def unread(client: Client, room_id: str) -> dict[str, Any]:
    body = await sync(client)
    return dict(body["rooms"]["join"][room_id]["unread_notifications"])


@pytest_twisted.ensureDeferred
async def test_user_rules_change_what_notifies(server: RunningServer) -> None:
    alice, bob = await user(server, "alice"), await user(server, "bob")
    room_id = await shared_room(alice, bob)
    # A muted room: nothing counts.
    assert (await put_rule(bob, "room", room_id, {"actions": []})).code == 200
    await send(alice, room_id, "hello")
    assert await unread(bob, room_id) == {"notification_count": 0, "highlight_count": 0}
    # A content rule ranks below room rules: unmute, then "cake" highlights.
    assert (await bob.delete(f"{RULES}/global/room/{q(room_id)}")).code == 200
    cake = {"pattern": "cake", "actions": ["notify", {"set_tweak": "highlight"}]}
    assert (await put_rule(bob, "content", "cake", cake)).code == 200
    await send(alice, room_id, "there is cake!")
    assert await unread(bob, room_id) == {"notification_count": 1, "highlight_count": 1}
