"""The wire contract of the internal API: each endpoint a name, a method and the
parameters carried in its path, known to the caller and the callee alike.

A POST endpoint's path ends with a transaction id the caller picks once per call and
keeps across its retries: the callee answers a repeated id from its cache, so a call
retried after a lost answer does its work once. GET endpoints read only; they carry no
transaction id and no body.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Literal

JsonDict = dict[str, Any]
# (request body, path parameters) -> (status, JSON body)
EndpointHandler = Callable[[JsonDict, dict[str, str]], Coroutine[Any, Any, tuple[int, JsonDict]]]

REPLICATION_PREFIX = "/_synapse/replication/"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class EndpointSpec:
    name: str
    method: Literal["POST", "GET"] = "POST"
    path_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"internal endpoint name {self.name!r}: expected [a-z][a-z0-9_]*")
        if "txn_id" in self.path_params or len(set(self.path_params)) != len(self.path_params):
            raise ValueError(f"internal endpoint {self.name}: bad path parameters")

    @property
    def cached(self) -> bool:
        """Whether calls carry a transaction id (and answers are cached by it)."""
        return self.method == "POST"

    @property
    def pattern(self) -> str:
        """The route pattern (``homeserver.http.server.compile_pattern``)."""
        parts = [f"{{{p}}}" for p in self.path_params]
        if self.cached:
            parts.append("{txn_id}")
        return REPLICATION_PREFIX + "/".join([self.name, *parts])

    def path(self, params: Mapping[str, str], txn_id: str | None) -> str:
        """The request path for ``params`` (each percent-encoded as one segment)."""
        missing = set(self.path_params) - set(params)
        extra = set(params) - set(self.path_params)
        if missing or extra:
            raise ValueError(
                f"internal endpoint {self.name}: expected parameters {list(self.path_params)},"
                f" got {sorted(params)}"
            )
        segments = [urllib.parse.quote(params[p], safe="") for p in self.path_params]
        if self.cached:
            if txn_id is None:
                raise ValueError(f"internal endpoint {self.name}: a POST needs a txn id")
            segments.append(urllib.parse.quote(txn_id, safe=""))
        return REPLICATION_PREFIX + "/".join([self.name, *segments])


@dataclass(frozen=True)
class InternalEndpoint:
    spec: EndpointSpec
    handler: EndpointHandler
