"""Federation's outbound IP policy is the one every outbound request uses: an IPv4-mapped
IPv6 address cannot slip past an IPv4 range of the default block list (it did when
federation kept a policy of its own that compared only same-version networks)."""

from __future__ import annotations

import pytest

from federation.http_client import DEFAULT_IP_RANGE_BLACKLIST
from homeserver.http.ip_filter import IpFilter


@pytest.mark.parametrize(
    "address", ["::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "0.0.0.0", "::"]
)
def test_default_federation_policy_refuses_mapped_and_unspecified(address: str) -> None:
    assert not IpFilter(DEFAULT_IP_RANGE_BLACKLIST, []).allows(address)


def test_allow_list_wins_for_the_mapped_form_too() -> None:
    policy = IpFilter(DEFAULT_IP_RANGE_BLACKLIST, ["127.0.0.0/8"])
    assert policy.allows("127.0.0.1") and policy.allows("::ffff:127.0.0.1")
    assert policy.allows("93.184.216.34") and not policy.allows("10.0.0.1")
