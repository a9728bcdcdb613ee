"""What a new password must be: never empty, at most 512 characters, and, when
``password_config.policy`` is enabled, as long and as varied as it asks (Synapse's
errcodes: ``M_PASSWORD_TOO_SHORT``, ``M_PASSWORD_NO_DIGIT``... all 400)."""

from __future__ import annotations

import re

from homeserver.config import PasswordPolicy
from homeserver.errors import Codes, MatrixError

MAX_PASSWORD_LENGTH = 512

# (policy flag, pattern one character must match, errcode, what is missing)
_CHARACTER_RULES = (
    ("require_digit", re.compile(r"[0-9]"), Codes.PASSWORD_NO_DIGIT, "a digit"),
    ("require_symbol", re.compile(r"[^a-zA-Z0-9]"), Codes.PASSWORD_NO_SYMBOL, "a symbol"),
    (
        "require_uppercase",
        re.compile(r"[A-Z]"),
        Codes.PASSWORD_NO_UPPERCASE,
        "an uppercase letter",
    ),
    (
        "require_lowercase",
        re.compile(r"[a-z]"),
        Codes.PASSWORD_NO_LOWERCASE,
        "a lowercase letter",
    ),
)


def check_new_password(password: str, policy: PasswordPolicy | None = None) -> None:
    """Raise a 400 ``MatrixError`` unless ``password`` may be set.

    ``policy`` is None where Synapse applies no policy (shared-secret registration):
    only emptiness and length are checked then.
    """
    if not password:
        raise MatrixError(400, Codes.WEAK_PASSWORD, "Password must not be empty")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise MatrixError(400, Codes.BAD_JSON, "Password too long")
    if policy is None or not policy.enabled:
        return
    if len(password) < policy.minimum_length:
        raise MatrixError(
            400,
            Codes.PASSWORD_TOO_SHORT,
            f"The password must be at least {policy.minimum_length} characters long",
        )
    for flag, pattern, errcode, what in _CHARACTER_RULES:
        if getattr(policy, flag) and pattern.search(password) is None:
            raise MatrixError(400, errcode, f"The password must include at least {what}")
