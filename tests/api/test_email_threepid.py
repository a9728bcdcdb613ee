"""Email validation by the homeserver, end to end: a real SMTP server (aiosmtpd) on
loopback receives the mail, the test follows the mailed link over HTTP, then registers,
adds the address, logs in with it."""

from __future__ import annotations

import email
import re
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import pytest_twisted
from aiosmtpd.controller import Controller
from twisted.internet import reactor, task

from tests.support.client import Client
from tests.support.federation import free_port
from tests.support.server import RunningServer

V3 = "/_matrix/client/v3"


class _Inbox:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[tuple[list[str], email.message.Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), message))
        return "250 OK"

    def count(self) -> int:
        with self.lock:
            return len(self.messages)


@pytest.fixture
def smtp() -> Iterator[tuple[_Inbox, int]]:
    inbox = _Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def config_overrides(smtp: tuple[_Inbox, int]) -> dict[str, Any]:
    _, port = smtp
    return {
        "email": {
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "notif_from": "Matrix <noreply@test.local>",
            "enable_tls": False,
        }
    }


async def _mail_link(inbox: _Inbox, count: int, to: str) -> str:
    """The link in mail number ``count`` (1-based), once it has arrived."""
    for _ in range(100):
        if inbox.count() >= count:
            break
        await task.deferLater(reactor, 0.05, lambda: None)
    with inbox.lock:
        rcpt, message = inbox.messages[count - 1]
    assert rcpt == [to]
    text = next(
        part.get_payload(decode=True).decode()
        for part in message.walk()
        if part.get_content_type() == "text/plain"
    )
    match = re.search(r"(http\S*)", text)
    assert match is not None, text
    return match.group(1)


async def _follow(server: RunningServer, link: str) -> Any:
    parts = urlsplit(link)
    return await server.client().get(f"{parts.path}?{parts.query}", token=False)


async def _validate(
    server: RunningServer, inbox: _Inbox, path: str, address: str, secret: str
) -> str:
    before = inbox.count()
    resp = await server.client().post(
        f"{V3}{path}", {"client_secret": secret, "email": address, "send_attempt": 1}, token=False
    )
    assert resp.code == 200, resp
    sid = str(resp.json["sid"])
    link = await _mail_link(inbox, before + 1, address.lower())
    assert f"sid={sid}" in link
    page = await _follow(server, link)
    assert page.code == 200, page
    assert b"validated" in page.raw
    return sid


@pytest_twisted.ensureDeferred
async def test_register_with_email_then_login_with_it(
    server: RunningServer, smtp: tuple[_Inbox, int]
) -> None:
    inbox, _ = smtp
    client = server.client()
    first = await client.post(f"{V3}/register", {"username": "alice", "password": "pw-alice1"})
    assert first.code == 401
    assert {"stages": ["m.login.email.identity"]} in first.json["flows"]
    sid = await _validate(server, inbox, "/register/email/requestToken", "Alice@Example.COM", "s1")
    resp = await client.post(
        f"{V3}/register",
        {
            "username": "alice",
            "password": "pw-alice1",
            "auth": {
                "type": "m.login.email.identity",
                "session": first.json["session"],
                "threepid_creds": {"sid": sid, "client_secret": "s1"},
            },
        },
        token=False,
    )
    assert resp.code == 200, resp
    alice = Client(server.base_url, resp.json["access_token"])
    threepids = (await alice.get(f"{V3}/account/3pid")).json["threepids"]
    assert [(t["medium"], t["address"]) for t in threepids] == [("email", "alice@example.com")]
    # Login by the address (any case), new and legacy forms.
    login = await server.client().post(
        f"{V3}/login",
        {
            "type": "m.login.password",
            "identifier": {
                "type": "m.id.thirdparty",
                "medium": "email",
                "address": "ALICE@example.com",
            },
            "password": "pw-alice1",
        },
        token=False,
    )
    assert login.code == 200 and login.json["user_id"] == "@alice:test.local", login
    login = await server.client().post(
        f"{V3}/login",
        {
            "type": "m.login.password",
            "medium": "email",
            "address": "alice@example.com",
            "password": "wrong",
        },
        token=False,
    )
    assert (login.code, login.json["errcode"]) == (403, "M_FORBIDDEN")
    # The address is taken now; password reset knows it, and an unknown one is refused.
    body = {"client_secret": "s2", "email": "alice@example.com", "send_attempt": 1}
    resp = await server.client().post(f"{V3}/register/email/requestToken", body, token=False)
    assert (resp.code, resp.json["errcode"]) == (400, "M_THREEPID_IN_USE")
    body = {"client_secret": "s3", "email": "nobody@example.com", "send_attempt": 1}
    resp = await server.client().post(
        f"{V3}/account/password/email/requestToken", body, token=False
    )
    assert (resp.code, resp.json["errcode"]) == (400, "M_THREEPID_NOT_FOUND")


@pytest_twisted.ensureDeferred
async def test_add_threepid_needs_a_validated_session_and_uia(
    server: RunningServer, smtp: tuple[_Inbox, int]
) -> None:
    inbox, _ = smtp
    bob = server.client()
    await bob.register("bob")
    body = {"client_secret": "sec", "email": "bob@example.com", "send_attempt": 1}
    resp = await bob.post(f"{V3}/account/3pid/email/requestToken", body, token=False)
    assert resp.code == 200, resp
    sid = resp.json["sid"]
    # The same send_attempt again: the same session, no second mail.
    again = await bob.post(f"{V3}/account/3pid/email/requestToken", body, token=False)
    assert again.json["sid"] == sid
    link = await _mail_link(inbox, 1, "bob@example.com")
    await task.deferLater(reactor, 0.2, lambda: None)
    assert inbox.count() == 1
    auth = {"type": "m.login.password", "user": bob.user_id, "password": "correct horse"}
    add = {"sid": sid, "client_secret": "sec", "auth": auth}
    # Not validated yet.
    resp = await bob.post(f"{V3}/account/3pid/add", add)
    assert (resp.code, resp.json["errcode"]) == (400, "M_THREEPID_AUTH_FAILED")
    # A wrong token does not validate it.
    bad = await _follow(server, re.sub(r"token=[^&]+", "token=nope", link))
    assert bad.code == 400
    assert (await _follow(server, link)).code == 200
    resp = await bob.post(f"{V3}/account/3pid/add", {"sid": sid, "client_secret": "sec"})
    assert resp.code == 401  # UIA first
    resp = await bob.post(
        f"{V3}/account/3pid/add",
        {"sid": sid, "client_secret": "sec", "auth": {**auth, "session": resp.json["session"]}},
    )
    assert resp.code == 200, resp
    threepids = (await bob.get(f"{V3}/account/3pid")).json["threepids"]
    assert [t["address"] for t in threepids] == ["bob@example.com"]
    # Somebody else cannot take it.
    carol = server.client()
    await carol.register("carol")
    resp = await carol.post(
        f"{V3}/account/3pid", {"three_pid_creds": {"sid": sid, "client_secret": "sec"}}
    )
    assert (resp.code, resp.json["errcode"]) == (400, "M_THREEPID_IN_USE")


@pytest_twisted.ensureDeferred
async def test_request_token_validation_and_msisdn(server: RunningServer) -> None:
    client = server.client()
    for body, errcode in (
        ({"email": "a@example.com", "send_attempt": 1}, "M_MISSING_PARAM"),
        (
            {"client_secret": "bad secret!", "email": "a@example.com", "send_attempt": 1},
            "M_INVALID_PARAM",
        ),
        ({"client_secret": "s", "email": "not-an-email", "send_attempt": 1}, "M_INVALID_PARAM"),
        ({"client_secret": "s", "email": "a@example.com", "send_attempt": "1"}, "M_BAD_JSON"),
    ):
        resp = await client.post(f"{V3}/register/email/requestToken", body, token=False)
        assert (resp.code, resp.json["errcode"]) == (400, errcode), (body, resp)
    resp = await client.post(
        f"{V3}/register/msisdn/requestToken",
        {"client_secret": "s", "country": "GB", "phone_number": "07700900001", "send_attempt": 1},
        token=False,
    )
    assert resp.code == 400, resp


class TestWithoutEmail:
    @pytest.fixture
    def config_overrides(self) -> dict[str, Any]:
        return {}

    @pytest_twisted.ensureDeferred
    async def test_request_token_is_refused_and_registration_has_no_email_stage(
        self, server: RunningServer
    ) -> None:
        client = server.client()
        body = {"client_secret": "s", "email": "a@example.com", "send_attempt": 1}
        resp = await client.post(f"{V3}/register/email/requestToken", body, token=False)
        assert resp.code == 400, resp
        first = await client.post(f"{V3}/register", {"username": "x", "password": "pw-x12345"})
        assert first.json["flows"] == [{"stages": ["m.login.dummy"]}]


@pytest_twisted.ensureDeferred
async def test_password_reset_through_email(
    server: RunningServer, smtp: tuple[_Inbox, int]
) -> None:
    inbox, _ = smtp
    dave = server.client()
    await dave.register("dave")
    sid = await _validate(
        server, inbox, "/account/3pid/email/requestToken", "dave@example.com", "d1"
    )
    auth = {"type": "m.login.password", "user": dave.user_id, "password": "correct horse"}
    resp = await dave.post(
        f"{V3}/account/3pid/add", {"sid": sid, "client_secret": "d1", "auth": auth}
    )
    assert resp.code == 200, resp
    # Without an access token, the password change asks for the email stage.
    anon = server.client()
    first = await anon.post(f"{V3}/account/password", {"new_password": "new-pass-1"}, token=False)
    assert first.code == 401, first
    assert first.json["flows"] == [{"stages": ["m.login.email.identity"]}]
    reset_sid = await _validate(
        server, inbox, "/account/password/email/requestToken", "dave@example.com", "d2"
    )
    # A session of another client secret proves nothing.
    bad = await anon.post(
        f"{V3}/account/password",
        {
            "new_password": "new-pass-1",
            "auth": {
                "type": "m.login.email.identity",
                "session": first.json["session"],
                "threepid_creds": {"sid": reset_sid, "client_secret": "other"},
            },
        },
        token=False,
    )
    assert bad.code == 401 and bad.json["errcode"] == "M_THREEPID_AUTH_FAILED", bad
    resp = await anon.post(
        f"{V3}/account/password",
        {
            "new_password": "new-pass-1",
            "auth": {
                "type": "m.login.email.identity",
                "session": first.json["session"],
                "threepid_creds": {"sid": reset_sid, "client_secret": "d2"},
            },
        },
        token=False,
    )
    assert resp.code == 200, resp
    # Signed out everywhere; the new password works, the old does not.
    assert (await dave.get(f"{V3}/account/whoami")).code == 401
    assert (await server.client().login("dave", "correct horse")).code == 403
    assert (await server.client().login("dave", "new-pass-1")).code == 200
