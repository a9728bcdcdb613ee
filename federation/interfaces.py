"""The seams between room logic and the federation transport.

Room-level federation code (joins, inbound PDUs, backfill) talks to other servers only
through ``FederationClient`` and checks signatures only through ``Keyring``, so it can
be tested against fakes and the transport can change underneath it.
"""

from __future__ import annotations

from typing import Any, Protocol

JsonDict = dict[str, Any]


class FederationRequestError(Exception):
    """A remote server answered with an error (or could not be reached)."""

    def __init__(
        self,
        destination: str,
        code: int,
        errcode: str | None,
        message: str,
        retry_after_ms: int | None = None,
        room_version: str | None = None,
    ) -> None:
        super().__init__(f"{destination}: {code} {errcode or ''} {message}")
        self.destination = destination
        self.code = code
        self.errcode = errcode
        self.message = message
        self.retry_after_ms = retry_after_ms
        # The room version an M_INCOMPATIBLE_ROOM_VERSION answer names.
        self.room_version = room_version


class FederationClient(Protocol):
    """Signed server-server requests (X-Matrix), JSON in and out.

    ``path`` is the full path starting with ``/_matrix/``; path parameters must already be
    percent-encoded by the caller. Errors raise ``FederationRequestError``. With
    ``max_body_bytes``, a longer answer is refused (502) and ``timeout_s`` also bounds
    reading the body (504).
    """

    async def get_json(
        self,
        destination: str,
        path: str,
        args: dict[str, str | list[str]] | None = None,
        *,
        timeout_s: float = 60.0,
        max_body_bytes: int | None = None,
    ) -> JsonDict: ...

    async def put_json(
        self,
        destination: str,
        path: str,
        body: JsonDict,
        *,
        timeout_s: float = 60.0,
        args: dict[str, str | list[str]] | None = None,
    ) -> Any: ...

    async def post_json(
        self,
        destination: str,
        path: str,
        body: JsonDict,
        *,
        timeout_s: float = 60.0,
        args: dict[str, str | list[str]] | None = None,
        max_body_bytes: int | None = None,
    ) -> Any: ...


class Keyring(Protocol):
    """Remote servers' signing keys, fetched and cached."""

    async def verify_json_for_server(
        self, server_name: str, json_object: JsonDict, *, valid_at_ms: int | None = None
    ) -> None:
        """Raise ``SignatureVerifyError`` unless ``json_object`` carries a valid signature
        of ``server_name`` made with a key valid at ``valid_at_ms`` (default: now)."""
        ...


class SignatureVerifyError(Exception):
    pass


class PduHandler(Protocol):
    """What the inbound transaction code hands PDUs to."""

    async def on_receive_pdu(self, origin: str, pdu: JsonDict) -> str | None:
        """Process one PDU from a /send transaction; return an error string or None."""
        ...


class EduHandler(Protocol):
    async def __call__(self, origin: str, content: JsonDict) -> None: ...
