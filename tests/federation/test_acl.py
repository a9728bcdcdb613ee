from __future__ import annotations

import pytest

from federation.acl import server_allowed_by_acl


@pytest.mark.parametrize(
    ("server", "acl", "allowed"),
    [
        ("evil.org", None, True),
        ("evil.org", {"allow": ["*"], "deny": ["evil.org"]}, False),
        ("evil.org:8448", {"allow": ["*"], "deny": ["evil.org"]}, False),
        ("sub.evil.org", {"allow": ["*"], "deny": ["*.evil.org"]}, False),
        ("good.org", {"allow": ["*"], "deny": ["*.evil.org"]}, True),
        ("good.org", {"deny": []}, False),  # no allow list: nothing allowed
        ("good.org", {"allow": ["good.*"]}, True),
        ("1.2.3.4", {"allow": ["*"], "allow_ip_literals": False}, False),
        ("[::1]:8448", {"allow": ["*"], "allow_ip_literals": False}, False),
        ("1.2.3.4", {"allow": ["*"]}, True),
        ("GOOD.org", {"allow": ["good.org"]}, True),
        ("good.org", {"allow": ["go?d.org"]}, True),
    ],
)
def test_server_acl(server: str, acl: dict | None, allowed: bool) -> None:
    assert server_allowed_by_acl(server, acl) is allowed
