"""Email validation by the homeserver itself (Synapse's ``email:`` section).

``request_token`` makes (or reuses) a validation session for (client secret, address)
and mails a link with a one-time token to the address; following the link
(``submit_token``) marks the session validated. A validated session then proves
ownership of the address to ``/account/3pid/add``, the ``m.login.email.identity``
UIA stage (password reset) and so on, through ``validated_threepid``.

Mail goes out through ``twisted.mail.smtp`` (never blocking the reactor): STARTTLS when
the server offers it (required with ``require_transport_security``), or TLS from the
first byte with ``force_tls``; SMTP AUTH with ``smtp_user``/``smtp_pass``.

Invariants: only the token's SHA-256 is stored; a token works until
``validation_token_lifetime`` runs out; a repeated request with the same or an older
``send_attempt`` sends nothing and answers the same session id (as the spec asks).
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import secrets
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid, parseaddr
from io import BytesIO
from typing import Any
from urllib.parse import urlencode

from twisted.internet import defer
from twisted.internet.ssl import optionsForClientTLS
from twisted.mail.smtp import ESMTPSenderFactory

from homeserver.clock import Clock
from homeserver.config import EmailConfig
from homeserver.errors import Codes, MatrixError
from storage.threepids import ThreePidStore, ValidationSession, ValidationSessionStore

logger = logging.getLogger(__name__)

JsonDict = dict[str, Any]
CLIENT_SECRET_RE = re.compile(r"^[0-9a-zA-Z.=_-]{1,255}$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+$")

# Which flow a token is for: where the mailed link points, and the mail's wording.
REGISTRATION = "registration"
ADD_THREEPID = "add_threepid"
PASSWORD_RESET = "password_reset"
SUBMIT_PATHS = {
    REGISTRATION: "_matrix/client/unstable/registration/email/submit_token",
    ADD_THREEPID: "_matrix/client/unstable/add_threepid/email/submit_token",
    PASSWORD_RESET: "_synapse/client/password_reset/email/submit_token",
}
_SUBJECTS = {
    REGISTRATION: "[%(app)s] Validate your email",
    ADD_THREEPID: "[%(app)s] Validate your email",
    PASSWORD_RESET: "[%(app)s] Password reset",
}


def canonical_email(address: str) -> str:
    """Email addresses compare case-insensitively and without surrounding spaces
    (as Synapse's ``canonicalise_email``); 400 for something that is not one."""
    address = address.strip()
    if not EMAIL_RE.match(address) or len(address) > 500:
        raise MatrixError(400, Codes.INVALID_PARAM, "Unable to parse email address")
    local, _, domain = address.rpartition("@")
    return f"{local.lower()}@{domain.lower()}"


class Mailer:
    """Sends one message through the configured SMTP server."""

    def __init__(self, reactor: Any, config: EmailConfig) -> None:
        self._reactor = reactor
        self._config = config

    async def send(self, to: str, subject: str, text: str, html_body: str) -> None:
        config = self._config
        message = MIMEMultipart("alternative")
        message["Subject"] = subject
        message["From"] = config.notif_from
        message["To"] = to
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid()
        message.attach(MIMEText(text, "plain", "utf-8"))
        message.attach(MIMEText(html_body, "html", "utf-8"))
        done: defer.Deferred[Any] = defer.Deferred()
        user = config.smtp_user
        factory = ESMTPSenderFactory(
            user.encode() if user else None,
            (config.smtp_pass or "").encode() if user else None,
            parseaddr(config.notif_from)[1],  # the envelope sender: the bare address
            to,
            BytesIO(message.as_bytes()),
            done,
            retries=0,
            timeout=30,
            heloFallback=True,
            requireAuthentication=user is not None,
            requireTransportSecurity=config.require_transport_security,
            hostname=config.smtp_host if config.enable_tls else None,
        )
        if config.force_tls:
            self._reactor.connectSSL(
                config.smtp_host,
                config.smtp_port,
                factory,
                optionsForClientTLS(config.smtp_host),
                timeout=30,
            )
        else:
            self._reactor.connectTCP(config.smtp_host, config.smtp_port, factory, timeout=30)
        await done


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class EmailValidation:
    def __init__(
        self,
        config: EmailConfig | None,
        mailer: Mailer | None,
        sessions: ValidationSessionStore,
        threepids: ThreePidStore,
        clock: Clock,
        public_baseurl: str,
    ) -> None:
        self._config = config
        self._mailer = mailer
        self._sessions = sessions
        self._threepids = threepids
        self._clock = clock
        self._baseurl = public_baseurl if public_baseurl.endswith("/") else public_baseurl + "/"

    @property
    def enabled(self) -> bool:
        return self._config is not None

    def _now(self) -> int:
        return int(self._clock.seconds() * 1000)

    async def request_token(self, kind: str, body: JsonDict) -> JsonDict:
        """``POST .../email/requestToken`` for ``kind``; the answer (``{"sid"}``)."""
        if self._config is None or self._mailer is None:
            raise MatrixError(
                400, Codes.UNKNOWN, "Email-based validation is not enabled on this server"
            )
        client_secret = body.get("client_secret")
        email = body.get("email")
        send_attempt = body.get("send_attempt")
        next_link = body.get("next_link")
        for key, value in (("client_secret", client_secret), ("email", email)):
            if value is None:
                raise MatrixError(400, Codes.MISSING_PARAM, f"Missing parameter: {key}")
            if not isinstance(value, str):
                raise MatrixError(400, Codes.BAD_JSON, f"{key} must be a string")
        if send_attempt is None:
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing parameter: send_attempt")
        if not isinstance(send_attempt, int) or isinstance(send_attempt, bool):
            raise MatrixError(400, Codes.BAD_JSON, "send_attempt must be an integer")
        if next_link is not None and (
            not isinstance(next_link, str) or not next_link.startswith(("https://", "http://"))
        ):
            raise MatrixError(400, Codes.INVALID_PARAM, "next_link must be an http(s) URL")
        assert isinstance(client_secret, str) and isinstance(email, str)
        if not CLIENT_SECRET_RE.match(client_secret):
            raise MatrixError(400, Codes.INVALID_PARAM, "Invalid client_secret")
        address = canonical_email(email)
        owner = await self._threepids.get_user_by_threepid("email", address)
        if kind == PASSWORD_RESET and owner is None:
            raise MatrixError(400, Codes.THREEPID_NOT_FOUND, "Email not found")
        if kind != PASSWORD_RESET and owner is not None:
            raise MatrixError(400, Codes.THREEPID_IN_USE, "Email is already in use")

        existing = await self._sessions.find(client_secret, "email", address)
        if existing is not None and send_attempt <= existing.last_send_attempt:
            return {"sid": existing.session_id}  # a retry: nothing is sent again
        session_id = existing.session_id if existing is not None else secrets.token_urlsafe(16)
        token = secrets.token_urlsafe(32)
        now = self._now()
        await self._sessions.upsert(
            ValidationSession(
                session_id=session_id,
                medium="email",
                address=address,
                client_secret=client_secret,
                last_send_attempt=send_attempt,
                token_hash=_hash(token),
                token_expires=now + self._config.token_lifetime_ms,
                next_link=next_link,
                validated_at=None,
            ),
            now,
        )
        link = (
            self._baseurl
            + SUBMIT_PATHS[kind]
            + "?"
            + urlencode({"token": token, "client_secret": client_secret, "sid": session_id})
        )
        await self._send_link(kind, address, link)
        return {"sid": session_id}

    async def _send_link(self, kind: str, address: str, link: str) -> None:
        assert self._config is not None and self._mailer is not None
        app = self._config.app_name
        subject = _SUBJECTS[kind] % {"app": app}
        what = "reset your password" if kind == PASSWORD_RESET else "validate your email address"
        text = (
            f"Hi,\n\nTo {what} on {app}, follow this link:\n\n{link}\n\n"
            "If you did not ask for this, ignore this message.\n"
        )
        body = (
            f"<p>Hi,</p><p>To {html.escape(what)} on {html.escape(app)}, "
            f'<a href="{html.escape(link)}">follow this link</a>.</p>'
            "<p>If you did not ask for this, ignore this message.</p>"
        )
        try:
            await self._mailer.send(address, subject, text, body)
        except Exception as e:
            logger.warning("Sending a validation email failed: %s", e)
            raise MatrixError(500, Codes.UNKNOWN, "Could not send the email") from None

    async def submit_token(self, sid: str, client_secret: str, token: str) -> ValidationSession:
        session = await self._sessions.validate(sid, client_secret, _hash(token), self._now())
        if session is None:
            raise MatrixError(
                400, Codes.THREEPID_AUTH_FAILED, "Invalid or expired validation token"
            )
        return session

    async def check_uia_stage(self, auth: JsonDict, session: Any, requester: Any) -> JsonDict:
        """The ``m.login.email.identity`` UIA stage: ``threepid_creds`` name a validated
        session; what it proves is recorded in the UIA session."""
        creds = auth.get("threepid_creds", auth.get("threepidCreds"))
        if not isinstance(creds, dict):
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing threepid_creds")
        medium, address, validated_at = await self.validated_threepid(
            creds.get("sid"), creds.get("client_secret")
        )
        return {"medium": medium, "address": address, "validated_at": validated_at}

    async def validated_threepid(self, sid: Any, client_secret: Any) -> tuple[str, str, int]:
        """(medium, address, validated_at) of a validated session; else
        ``M_THREEPID_AUTH_FAILED``."""
        if not isinstance(sid, str) or not isinstance(client_secret, str):
            raise MatrixError(400, Codes.MISSING_PARAM, "Missing sid or client_secret")
        session = await self._sessions.get(sid, client_secret)
        if session is None or session.validated_at is None:
            raise MatrixError(400, Codes.THREEPID_AUTH_FAILED, "No validated 3pid session found")
        return session.medium, session.address, session.validated_at
