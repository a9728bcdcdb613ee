"""End to end: Hydrogen, a complete Matrix web client, in headless Chromium.

Hydrogen (npm ``hydrogen-view-sdk``, its whole app) is served from a loopback page and
driven by Playwright for Python with Debian's ``/usr/bin/chromium`` (no Playwright
browser download). Alice uses the browser; Bob uses the client API. The scenario: log in
through the form, see the room list, create a room, Bob joins (shown by his display
name) and sends a text and an image (both appear live, the image displayed), Alice
answers through the composer, Bob's messages in a second room show an unread badge of 2
in Alice's room list, Alice accepts an invite, reloads and finds her session and history.
A failing run leaves screenshots in tests/e2e/screenshots/ (git-ignored).
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.js_clients import register, run_server
from tests.support.subprocess_server import ServerProcess

try:
    from playwright import sync_api as playwright_api
except ImportError:  # the `test` extra pins it; CI installs it
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("playwright is not installed (pip install -e '.[test]')", allow_module_level=True)

from tests.support.hydrogen import serve_hydrogen  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
PASSWORD = "correct horse battery staple"
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
UI_TIMEOUT_MS = 20000


class Api:
    """A user of the client API (Bob, and Alice's second device for checks)."""

    def __init__(self, base_url: str, token: str, user_id: str) -> None:
        self.base_url = base_url
        self.token = token
        self.user_id = user_id
        self._txn = 0

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(
            self.base_url + path,
            data,
            {"Authorization": f"Bearer {self.token}", "Content-Type": content_type},
            method=method,
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            result: dict[str, Any] = json.load(resp)
        return result

    def send(self, room_id: str, content: dict[str, Any]) -> str:
        self._txn += 1
        room = urllib.parse.quote(room_id)
        path = f"/_matrix/client/v3/rooms/{room}/send/m.room.message/t{self._txn}"
        return str(self.call("PUT", path, content)["event_id"])


def png_bytes(width: int = 64, height: int = 48) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 40)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from run_server(tmp_path)


@pytest.fixture
def chromium_path() -> str:
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing (scripts/ensure-services.sh installs Debian's chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


def users(base_url: str, suffix: str = "") -> tuple[Api, Api]:
    alice = register(base_url, f"alice{suffix}", PASSWORD)
    bob = register(base_url, f"bob{suffix}", PASSWORD)
    return (
        Api(base_url, alice["access_token"], alice["user_id"]),
        Api(base_url, bob["access_token"], bob["user_id"]),
    )


def run_scenario(page: Any, app_url: str, base_url: str, alice: Api, bob: Api) -> None:
    expect = playwright_api.expect
    bob.call(
        "PUT",
        f"/_matrix/client/v3/profile/{urllib.parse.quote(bob.user_id)}/displayname",
        {"displayname": "Bob Builder"},
    )

    # Log in through Hydrogen's form; the (empty) room list appears.
    page.goto(f"{app_url}/?hs={urllib.parse.quote(base_url)}")
    localpart = alice.user_id.split(":", 1)[0].removeprefix("@")
    page.fill("#username", localpart)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator(".SessionView .LeftPanel .RoomList")).to_be_attached()

    # Create a public room through the UI and open it from the room list.
    page.click(".LeftPanel button.create")
    page.get_by_text("Create Room", exact=True).click()
    page.fill("#name", "Browser room")
    page.check("#isPublic")
    page.fill("#roomAlias", f"room-of-{localpart}")
    page.click(".CreateRoomView button[type=submit]")
    page.locator(".RoomList li", has_text="Browser room").click()
    page.wait_for_function("location.hash.includes('/room/!')")
    room_id = urllib.parse.unquote(re.search(r"/room/(![^/]+)", page.url).group(1))  # type: ignore[union-attr]
    # Hydrogen marks an open room read 2 s after opening it (if anything is unread then)
    # and 2 s after the composer gets focus: let the first pass, so Bob's messages stay
    # unread (and counted) until Alice types.
    page.wait_for_timeout(2500)

    # Bob joins and sends a text and an image: all live, Bob by his display name.
    bob.call("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room_id)}", {})
    timeline = page.locator(".RoomView .Timeline")
    expect(timeline.get_by_text("Bob Builder joined the room")).to_be_visible()
    bob.send(room_id, {"msgtype": "m.text", "body": "hello from bob"})
    expect(timeline.get_by_text("hello from bob")).to_be_visible()
    image = png_bytes()
    mxc = bob.call(
        "POST",
        "/_matrix/media/v3/upload?filename=red.png",
        raw=image,
        content_type="image/png",
    )["content_uri"]
    bob.send(
        room_id,
        {
            "msgtype": "m.image",
            "body": "red.png",
            "url": mxc,
            "info": {"mimetype": "image/png", "w": 64, "h": 48, "size": len(image)},
        },
    )
    img = timeline.locator("img").last
    expect(img).to_be_visible()
    page.wait_for_function(
        "img => img.complete && img.naturalWidth > 0",
        arg=img.element_handle(),
        timeout=UI_TIMEOUT_MS,
    )

    expect(page.locator(".RoomList li", has_text="Browser room").locator(".badge")).to_have_text(
        "2"
    )

    # Alice answers through the composer; Bob reads it through the API.
    composer = page.locator(".MessageComposer textarea")
    composer.fill("hi bob, from the browser")
    composer.press("Enter")
    expect(timeline.get_by_text("hi bob, from the browser")).to_be_visible()
    wait_for_message(bob, room_id, "hi bob, from the browser")

    # Bob's two messages in another room: an unread badge of 2 in Alice's room list.
    other = bob.call(
        "POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat", "name": "Bob's room"}
    )["room_id"]
    alice.call("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(other)}", {})
    bob.send(other, {"msgtype": "m.text", "body": "one"})
    bob.send(other, {"msgtype": "m.text", "body": "two"})
    entry = page.locator(".RoomList li", has_text="Bob's room")
    expect(entry.locator(".badge")).to_have_text("2")

    # An invite shows up; Alice accepts it in the UI.
    invited = bob.call(
        "POST", "/_matrix/client/v3/createRoom", {"name": "Invite room", "invite": [alice.user_id]}
    )["room_id"]
    page.locator(".RoomList li", has_text="Invite room").click()
    page.locator(".InviteView button", has_text="Accept").click()
    expect(page.locator(".RoomView .Timeline")).to_be_visible()
    wait_for_membership(bob, invited, alice.user_id, "join")

    # Reload: the session is kept (no login form again) and the first room's history is there.
    page.locator(".RoomList li", has_text="Browser room").click()
    page.reload()
    timeline = page.locator(".RoomView .Timeline")
    expect(timeline.get_by_text("hello from bob")).to_be_visible()
    expect(timeline.get_by_text("hi bob, from the browser")).to_be_visible()
    expect(timeline.get_by_text("Bob Builder joined the room")).to_be_visible()
    expect(page.locator("#username")).to_have_count(0)


def wait_for_message(api: Api, room_id: str, body: str) -> None:
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    room = urllib.parse.quote(room_id)
    while time.monotonic() < deadline:
        chunk = api.call("GET", f"/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=20")["chunk"]
        if any(ev.get("content", {}).get("body") == body for ev in chunk):
            return
        time.sleep(0.2)
    raise AssertionError(f"{body!r} never reached {room_id}")


def wait_for_membership(api: Api, room_id: str, user_id: str, membership: str) -> None:
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    room = urllib.parse.quote(room_id)
    path = f"/_matrix/client/v3/rooms/{room}/state/m.room.member/{urllib.parse.quote(user_id)}"
    while time.monotonic() < deadline:
        if api.call("GET", path).get("membership") == membership:
            return
        time.sleep(0.2)
    raise AssertionError(f"{user_id} never reached {membership} in {room_id}")


def test_hydrogen_in_chromium(
    server: ServerProcess, chromium_path: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    alice, bob = users(server.base_url)
    with serve_hydrogen(tmp_path / "web") as app_url, playwright_api.sync_playwright() as pw:
        # No connection of Chromium's own: this machine's network is closed.
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        context.set_default_timeout(UI_TIMEOUT_MS)
        playwright_api.expect.set_options(timeout=UI_TIMEOUT_MS)
        page = context.new_page()
        console: list[str] = []
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
        page.on(
            "requestfinished",
            lambda r: (
                console.append(f"request: {r.method} {r.url}") if "/receipt/" in r.url else None
            ),
        )
        page.on(
            "response",
            lambda r: console.append(f"response: {r.status} {r.url}") if r.status >= 400 else None,
        )
        try:
            run_scenario(page, app_url, server.base_url, alice, bob)
        except Exception:
            SCREENSHOTS.mkdir(exist_ok=True)
            shot = SCREENSHOTS / f"{request.node.name}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}\nconsole:\n" + "\n".join(console[-40:]))
            raise
        finally:
            browser.close()
