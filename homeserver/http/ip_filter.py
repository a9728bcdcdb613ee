"""Which IP addresses the server may connect to: one policy for every outbound request
(federation, URL previews, remote media, push gateways, identity servers).

An address in the block list is refused unless it is in the allow list. An IPv4-mapped
IPv6 address (``::ffff:10.0.0.1``) is judged as the IPv4 address it carries, so a mapped
form cannot slip past an IPv4 range; the unspecified address (``0.0.0.0``, ``::``), which
connects to the local host, and anything that is not an IP literal are refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class IpFilter:
    def __init__(self, blacklist: Sequence[str], whitelist: Sequence[str]) -> None:
        self._black = [ipaddress.ip_network(c, strict=False) for c in blacklist]
        self._white = [ipaddress.ip_network(c, strict=False) for c in whitelist]

    def allows(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if ip.is_unspecified:
            return False
        candidates: list[IpAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        for candidate in candidates:
            if any(candidate in net for net in self._white):
                return True
        return not any(candidate in net for candidate in candidates for net in self._black)
