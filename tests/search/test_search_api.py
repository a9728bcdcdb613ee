"""POST /search over real HTTP on SQLite and PostgreSQL: matching, ranking, ordering,
pagination, filters, context, groups, state, highlights, count and input errors."""

from __future__ import annotations

import base64

import pytest_twisted

from tests.search.helpers import (
    V3,
    all_pages,
    assert_error,
    create_room,
    join,
    put_state,
    result_ids,
    search,
    search_raw,
    send,
    user,
)
from tests.support.client import q
from tests.support.server import RunningServer


@pytest_twisted.ensureDeferred
async def test_search_finds_matching_message_with_rank_count_and_highlights(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    hit = await send(alice, room, "The Martians are coming")
    await send(alice, room, "nothing to see here")
    res = await search(alice, "martian")
    assert result_ids(res) == [hit]
    first = res["results"][0]
    assert first["result"]["content"]["body"] == "The Martians are coming"
    assert first["result"]["room_id"] == room
    assert first["result"]["sender"] == alice.user_id
    assert isinstance(first["rank"], float) and first["rank"] > 0
    assert res["count"] == 1
    # Stemming: the word as it appears in the event is what a client highlights.
    assert "martians" in res["highlights"]
    assert "next_batch" not in res
    assert "context" not in first and "groups" not in res and "state" not in res


@pytest_twisted.ensureDeferred
async def test_search_without_match_is_empty(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    await send(alice, room, "hello world")
    res = await search(alice, "zeppelin")
    assert res["results"] == [] and res["count"] == 0
    assert "next_batch" not in res


@pytest_twisted.ensureDeferred
async def test_last_word_matches_as_prefix_and_words_are_anded(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    both = await send(alice, room, "orange submarine")
    await send(alice, room, "orange juice")
    assert result_ids(await search(alice, "orange subma")) == [both]
    assert result_ids(await search(alice, "submarine orange")) == [both]


@pytest_twisted.ensureDeferred
async def test_phrase_negation_and_or(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    red_car = await send(alice, room, "red car parked")
    car_red = await send(alice, room, "car painted red")
    blue = await send(alice, room, "blue boat")
    assert result_ids(await search(alice, '"red car"')) == [red_car]
    assert result_ids(await search(alice, "car -painted")) == [red_car]
    assert set(result_ids(await search(alice, "boat or painted"))) == {car_red, blue}


@pytest_twisted.ensureDeferred
async def test_rank_order_puts_more_occurrences_first(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    for filler in ("lorem ipsum dolor", "sit amet elit", "sed do eiusmod"):
        await send(alice, room, filler)
    twice = await send(alice, room, "apple apple banana")
    once = await send(alice, room, "apple banana cherry")
    res = await search(alice, "apple", order_by="rank")
    assert result_ids(res) == [twice, once]
    ranks = [r["rank"] for r in res["results"]]
    assert ranks[0] > ranks[1]


@pytest_twisted.ensureDeferred
async def test_recent_order_is_newest_first(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    ids = [await send(alice, room, f"kiwi number {i}") for i in range(4)]
    await send(alice, room, "kiwi kiwi kiwi kiwi")  # best rank, but newest anyway
    ids.append((await search(alice, "kiwi", order_by="recent"))["results"][0]["result"]["event_id"])
    res = await search(alice, "kiwi", order_by="recent")
    assert result_ids(res) == list(reversed(ids))


@pytest_twisted.ensureDeferred
async def test_pagination_follows_next_batch_without_duplicates(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_a = await create_room(alice)
    room_b = await create_room(alice)
    sent = []
    for i in range(23):
        room = room_a if i % 3 else room_b
        words = " ".join(["mango"] * (1 + i % 4))
        sent.append(await send(alice, room, f"{words} item{i}"))
    for order in ("recent", "rank"):
        pages = await all_pages(alice, "mango", order_by=order, filter={"limit": 4})
        flat = [e for page in pages for e in page]
        assert len(flat) == len(set(flat)) == 23, order
        assert set(flat) == set(sent)
        assert all(len(p) == 4 for p in pages[:-1]) and len(pages) == 6
        if order == "recent":
            assert flat == list(reversed(sent))
    # Counts stay the total on every page.
    res = await search(alice, "mango", filter={"limit": 4})
    assert res["count"] == 23
    again = await search(alice, "mango", res["next_batch"], filter={"limit": 4})
    assert again["count"] == 23


@pytest_twisted.ensureDeferred
async def test_next_batch_of_other_order_or_garbage_is_rejected(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    for i in range(3):
        await send(alice, room, f"pear {i}")
    res = await search(alice, "pear", order_by="recent", filter={"limit": 1})
    resp = await search_raw(alice, res["next_batch"], search_term="pear", order_by="rank")
    assert_error(resp, 400, "M_INVALID_PARAM")
    for token in ("not-a-token", base64.urlsafe_b64encode(b'{"o":"recent"}').decode(), "%%%"):
        resp = await search_raw(alice, token, search_term="pear")
        assert_error(resp, 400, "M_INVALID_PARAM")


@pytest_twisted.ensureDeferred
async def test_filter_rooms_and_not_rooms(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_a = await create_room(alice)
    room_b = await create_room(alice)
    in_a = await send(alice, room_a, "grape in a")
    in_b = await send(alice, room_b, "grape in b")
    assert result_ids(await search(alice, "grape", filter={"rooms": [room_a]})) == [in_a]
    assert result_ids(await search(alice, "grape", filter={"not_rooms": [room_a]})) == [in_b]
    res = await search(alice, "grape", filter={"rooms": [room_a], "not_rooms": [room_a]})
    assert res["results"] == [] and res["count"] == 0


@pytest_twisted.ensureDeferred
async def test_filter_senders_and_not_senders(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    from_alice = await send(alice, room, "plum from alice")
    from_bob = await send(bob, room, "plum from bob")
    res = await search(alice, "plum", filter={"senders": [bob.user_id]})
    assert result_ids(res) == [from_bob] and res["count"] == 1
    res = await search(alice, "plum", filter={"not_senders": [bob.user_id]})
    assert result_ids(res) == [from_alice]
    assert (await search(alice, "plum", filter={"senders": []}))["results"] == []


@pytest_twisted.ensureDeferred
async def test_name_and_topic_are_searchable_and_keys_and_types_restrict(
    server: RunningServer,
) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    name = await put_state(alice, room, "m.room.name", {"name": "Lemon club"})
    topic = await put_state(alice, room, "m.room.topic", {"topic": "all about lemon"})
    body = await send(alice, room, "lemon tart")
    assert set(result_ids(await search(alice, "lemon"))) == {name, topic, body}
    assert result_ids(await search(alice, "lemon", keys=["content.name"])) == [name]
    assert result_ids(await search(alice, "lemon", keys=["content.topic"])) == [topic]
    assert result_ids(await search(alice, "lemon", keys=["content.body"])) == [body]
    res = await search(alice, "lemon", filter={"types": ["m.room.n*"]})
    assert result_ids(res) == [name]
    res = await search(alice, "lemon", filter={"not_types": ["m.room.message"]})
    assert set(result_ids(res)) == {name, topic}
    res = await search(alice, "lemon", keys=["content.body"], filter={"types": ["m.room.name"]})
    assert res["results"] == []
    # The text/plain representation of the m.topic topic is searched too.
    extensible = await put_state(
        alice,
        room,
        "m.room.topic",
        {"topic": "x", "m.topic": [{"mimetype": "text/plain", "body": "quince corner"}]},
    )
    assert result_ids(await search(alice, "quince")) == [extensible]


@pytest_twisted.ensureDeferred
async def test_filter_limit_sets_page_size(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    for i in range(5):
        await send(alice, room, f"fig {i}")
    res = await search(alice, "fig", filter={"limit": 2})
    assert len(res["results"]) == 2 and "next_batch" in res
    res = await search(alice, "fig")  # default limit 10
    assert len(res["results"]) == 5 and "next_batch" not in res


@pytest_twisted.ensureDeferred
async def test_event_context_with_profile(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    await alice.put(f"{V3}/profile/{q(alice.user_id)}/displayname", {"displayname": "Alice A"})
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    before = [await send(alice, room, f"before {i}") for i in range(3)]
    hit = await send(bob, room, "the walnut message")
    after = [await send(alice, room, f"after {i}") for i in range(3)]
    res = await search(
        alice,
        "walnut",
        event_context={"before_limit": 2, "after_limit": 2, "include_profile": True},
    )
    assert result_ids(res) == [hit]
    ctx = res["results"][0]["context"]
    # events_before is newest first (as /context), events_after oldest first.
    assert [e["event_id"] for e in ctx["events_before"]] == [before[2], before[1]]
    assert [e["event_id"] for e in ctx["events_after"]] == after[:2]
    assert isinstance(ctx["start"], str) and isinstance(ctx["end"], str)
    assert ctx["profile_info"][alice.user_id]["displayname"] == "Alice A"
    assert ctx["profile_info"][bob.user_id]["displayname"] == "bob"
    # The start token pages /messages further back from the context.
    resp = await alice.get(
        f"{V3}/rooms/{q(room)}/messages", params={"from": ctx["start"], "dir": "b", "limit": 1}
    )
    assert resp.code == 200 and resp.json["chunk"][0]["event_id"] == before[0]
    # Defaults: five either side, no profile.
    res = await search(alice, "walnut", event_context={})
    ctx = res["results"][0]["context"]
    assert len(ctx["events_before"]) == 5 and len(ctx["events_after"]) == 3
    assert "profile_info" not in ctx


@pytest_twisted.ensureDeferred
async def test_groupings_by_room_and_sender(server: RunningServer) -> None:
    alice = await user(server, "alice")
    bob = await user(server, "bob")
    room_a = await create_room(alice, preset="public_chat")
    room_b = await create_room(alice, preset="public_chat")
    await join(bob, room_a)
    a1 = await send(alice, room_a, "cherry one")
    b1 = await send(alice, room_b, "cherry two")
    a2 = await send(bob, room_a, "cherry three")
    groupings = {"group_by": [{"key": "room_id"}, {"key": "sender"}]}
    res = await search(alice, "cherry", order_by="recent", groupings=groupings)
    assert result_ids(res) == [a2, b1, a1]
    rooms = res["groups"]["room_id"]
    assert rooms[room_a]["results"] == [a2, a1] and rooms[room_b]["results"] == [b1]
    assert rooms[room_a]["order"] < rooms[room_b]["order"]
    senders = res["groups"]["sender"]
    assert senders[bob.user_id]["results"] == [a2]
    assert senders[alice.user_id]["results"] == [b1, a1]
    assert all("next_batch" not in g for g in rooms.values())


@pytest_twisted.ensureDeferred
async def test_group_next_batch_continues_within_the_group(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room_a = await create_room(alice)
    room_b = await create_room(alice)
    in_a = []
    for i in range(6):
        in_a.append(await send(alice, room_a, f"date a{i}"))
        await send(alice, room_b, f"date b{i}")
    groupings = {"group_by": [{"key": "room_id"}]}
    kw = {"order_by": "recent", "filter": {"limit": 2}, "groupings": groupings}
    res = await search(alice, "date", **kw)
    assert result_ids(res) == [in_a[5]] or room_a in res["groups"]["room_id"]
    token = res["groups"]["room_id"][room_a]["next_batch"]
    seen = list(res["groups"]["room_id"][room_a]["results"])
    while token is not None:
        page = await search(alice, "date", token, **kw)
        assert all(r["result"]["room_id"] == room_a for r in page["results"])
        seen += result_ids(page)
        token = page.get("next_batch")  # the top-level token stays in the group
    assert seen == list(reversed(in_a))


@pytest_twisted.ensureDeferred
async def test_include_state_returns_current_state_of_result_rooms(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice, name="Stateful")
    other = await create_room(alice)
    await send(alice, room, "papaya time")
    await send(alice, other, "unrelated")
    res = await search(alice, "papaya", include_state=True)
    assert list(res["state"]) == [room]
    types = {(e["type"], e["state_key"]) for e in res["state"][room]}
    assert ("m.room.create", "") in types and ("m.room.member", alice.user_id) in types
    name = [e for e in res["state"][room] if e["type"] == "m.room.name"]
    assert name[0]["content"]["name"] == "Stateful"
    assert "state" not in await search(alice, "papaya")


@pytest_twisted.ensureDeferred
async def test_nasty_search_terms_do_not_error(server: RunningServer) -> None:
    alice = await user(server, "alice")
    room = await create_room(alice)
    zebra = await send(alice, room, "a zebra (striped) AND proud: 100% 'sure' \"yes\"")
    nasty = [
        '"',
        '""',
        "'",
        "''",
        "(",
        ")",
        "()",
        "*",
        "**",
        "AND",
        "OR",
        "NOT",
        "NEAR",
        "-",
        "--",
        "- -",
        "^",
        "!",
        "&",
        "|",
        "&&",
        "||",
        "!!",
        "\\",
        "%",
        "_",
        ":",
        ":*",
        "<->",
        "<2>",
        "{",
        "}",
        "[",
        "]",
        "+",
        "~",
        "' OR 1=1 --",
        '"; DROP TABLE events; --',
        "NEAR(a b)",
        "body:zebra",
        "value:zebra",
        "a AND",
        "AND a",
        "NOT zebra",
        "-zebra",
        "or",
        "or or",
        "zebra or",
        "or zebra",
        "🎉",
        "a\u0301",
        "日本語",
        "x" * 5000,
        " ".join(["w"] * 500),
        "\u200b",
        "\t\n",
        "",
    ]
    for term in nasty:
        resp = await search_raw(alice, search_term=term, order_by="rank")
        assert resp.code == 200, (term, resp)
        resp = await search_raw(alice, search_term=term, order_by="recent")
        assert resp.code == 200, (term, resp)
    for term in ("\x00", "zebra\x00"):  # no client JSON carries U+0000 (PostgreSQL)
        resp = await search_raw(alice, search_term=term, order_by="rank")
        assert (resp.code, resp.json["errcode"]) == (400, "M_BAD_JSON"), (term, resp)
    for term in (
        "zebra*",
        '"zebra',
        "(zebra)",
        "zebra:",
        "'zebra'",
        "-x zebra",
        "striped)",
        "ZEBRA",
        "zebra OR nothing",
        "strip",
    ):
        assert result_ids(await search(alice, term)) == [zebra], term
    assert (await search(alice, "-zebra"))["results"] == []


@pytest_twisted.ensureDeferred
async def test_invalid_requests_are_rejected(server: RunningServer) -> None:
    alice = await user(server, "alice")
    anonymous = server.client()
    resp = await anonymous.post(f"{V3}/search", {"search_categories": {}})
    assert_error(resp, 401, "M_MISSING_TOKEN")
    assert_error(await alice.post(f"{V3}/search", {}), 400, "M_MISSING_PARAM")
    resp = await alice.post(f"{V3}/search", {"search_categories": []})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await alice.request("POST", f"{V3}/search", raw=b"{not json")
    assert_error(resp, 400, "M_NOT_JSON")
    assert_error(await search_raw(alice), 400, "M_MISSING_PARAM")
    assert_error(await search_raw(alice, search_term=5), 400, "M_BAD_JSON")
    assert_error(await search_raw(alice, search_term="x", order_by="best"), 400, "M_INVALID_PARAM")
    assert_error(
        await search_raw(alice, search_term="x", keys=["content.format"]), 400, "M_INVALID_PARAM"
    )
    assert_error(await search_raw(alice, search_term="x", keys="content.body"), 400, "M_BAD_JSON")
    resp = await search_raw(alice, search_term="x", groupings={"group_by": [{"key": "type"}]})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await search_raw(alice, search_term="x", filter={"limit": -1})
    assert_error(resp, 400, "M_BAD_JSON")
    resp = await search_raw(alice, search_term="x", event_context={"before_limit": -1})
    assert_error(resp, 400, "M_INVALID_PARAM")
    resp = await search_raw(alice, search_term="x", include_state="yes")
    assert_error(resp, 400, "M_BAD_JSON")
    # Unknown categories are ignored.
    resp = await alice.post(f"{V3}/search", {"search_categories": {"people": {}}})
    assert resp.code == 200 and resp.json == {"search_categories": {}}
    # r0 is served too.
    resp = await alice.post(
        "/_matrix/client/r0/search", {"search_categories": {"room_events": {"search_term": "x"}}}
    )
    assert resp.code == 200
