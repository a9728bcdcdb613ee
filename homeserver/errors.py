"""The one error type of the server: raised wherever a problem is found, turned into
an HTTP response once, at the edge (``homeserver.http.server``)."""

from __future__ import annotations

from typing import Any


class Codes:
    UNRECOGNIZED = "M_UNRECOGNIZED"
    UNKNOWN = "M_UNKNOWN"
    FORBIDDEN = "M_FORBIDDEN"
    BAD_JSON = "M_BAD_JSON"
    NOT_JSON = "M_NOT_JSON"
    NOT_FOUND = "M_NOT_FOUND"
    MISSING_TOKEN = "M_MISSING_TOKEN"
    UNKNOWN_TOKEN = "M_UNKNOWN_TOKEN"
    MISSING_PARAM = "M_MISSING_PARAM"
    INVALID_PARAM = "M_INVALID_PARAM"
    TOO_LARGE = "M_TOO_LARGE"
    LIMIT_EXCEEDED = "M_LIMIT_EXCEEDED"
    USER_IN_USE = "M_USER_IN_USE"
    INVALID_USERNAME = "M_INVALID_USERNAME"
    EXCLUSIVE = "M_EXCLUSIVE"
    USER_DEACTIVATED = "M_USER_DEACTIVATED"
    GUEST_ACCESS_FORBIDDEN = "M_GUEST_ACCESS_FORBIDDEN"
    UNSUPPORTED_ROOM_VERSION = "M_UNSUPPORTED_ROOM_VERSION"
    INCOMPATIBLE_ROOM_VERSION = "M_INCOMPATIBLE_ROOM_VERSION"
    ROOM_IN_USE = "M_ROOM_IN_USE"
    WEAK_PASSWORD = "M_WEAK_PASSWORD"
    PASSWORD_TOO_SHORT = "M_PASSWORD_TOO_SHORT"
    PASSWORD_NO_DIGIT = "M_PASSWORD_NO_DIGIT"
    PASSWORD_NO_SYMBOL = "M_PASSWORD_NO_SYMBOL"
    PASSWORD_NO_LOWERCASE = "M_PASSWORD_NO_LOWERCASE"
    PASSWORD_NO_UPPERCASE = "M_PASSWORD_NO_UPPERCASE"
    THREEPID_NOT_FOUND = "M_THREEPID_NOT_FOUND"
    THREEPID_IN_USE = "M_THREEPID_IN_USE"
    THREEPID_AUTH_FAILED = "M_THREEPID_AUTH_FAILED"
    THREEPID_DENIED = "M_THREEPID_DENIED"
    THREEPID_MEDIUM_NOT_SUPPORTED = "M_THREEPID_MEDIUM_NOT_SUPPORTED"
    NOT_YET_UPLOADED = "M_NOT_YET_UPLOADED"
    CANNOT_OVERWRITE_MEDIA = "M_CANNOT_OVERWRITE_MEDIA"
    UNAUTHORIZED = "M_UNAUTHORIZED"


class MatrixError(Exception):
    """An error with an HTTP status and a Matrix ``errcode``.

    ``extra`` keys are merged into the JSON body (``retry_after_ms``, ``soft_logout``...).
    """

    def __init__(
        self,
        status: int,
        errcode: str,
        message: str,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra or {}
        self.headers = headers or {}

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"errcode": self.errcode, "error": self.message}
        body.update(self.extra)
        return body


class LimitExceededError(MatrixError):
    def __init__(self, retry_after_ms: int) -> None:
        super().__init__(
            429,
            Codes.LIMIT_EXCEEDED,
            "Too many requests",
            extra={"retry_after_ms": retry_after_ms},
            headers={"Retry-After": str(max(1, -(-retry_after_ms // 1000)))},
        )
        self.retry_after_ms = retry_after_ms


class InteractiveAuthIncomplete(MatrixError):
    """A 401 whose body is the user-interactive auth state, not a plain error."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(401, body.get("errcode", ""), body.get("error", ""))
        self.body = body

    def to_json(self) -> dict[str, Any]:
        return self.body


def bad_json(message: str) -> MatrixError:
    return MatrixError(400, Codes.BAD_JSON, message)


def forbidden(message: str) -> MatrixError:
    return MatrixError(403, Codes.FORBIDDEN, message)


def not_found(message: str) -> MatrixError:
    return MatrixError(404, Codes.NOT_FOUND, message)
