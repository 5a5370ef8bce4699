"""Login sessions and bearer tokens of the practice site's members area and token API.

One :class:`Accounts` per site holds the demo credentials, the live session ids
(set by ``POST /login``) and the live bearer tokens (granted by ``POST /api/token``),
all in memory behind one lock. Ids and tokens are random, so nothing a client
holds survives :meth:`Accounts.revoke_sessions` / :meth:`Accounts.expire_tokens`.
The HTTP side lives in :mod:`crawler.practice.members`.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crawler.practice.site import SiteCounters


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison of two strings (of any characters)."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """What one ``POST /api/token`` looked like from the server's side (never a secret).

    ``credentials``: where the client credentials came: ``"basic"`` (an ``Authorization:
    Basic`` header), ``"body"`` (``client_id``/``client_secret`` fields), ``"both"`` (refused
    with a 400: RFC 6749 §2.3 allows one method per request) or ``"none"``.
    ``content_type``: the request's media type, lowercased, without parameters (``""`` if none).
    ``fields``: the names of the body's fields, sorted (``client_id`` included, if it was sent).
    ``basic_encoding``: for Basic credentials that were accepted, ``"form-urlencoded"`` if they
    matched only once each part was form-urlencoding-decoded (RFC 6749 §2.3.1),
    ``"plain"`` if they matched only as sent, ``""`` if that cannot be told (decoding
    changes nothing) or they were not accepted.
    ``status``: the HTTP status answered (200 for a grant).
    """

    credentials: str
    content_type: str
    fields: tuple[str, ...]
    basic_encoding: str
    status: int


def check_token_error(status: int | None) -> None:
    """Refuse a ``token_error`` that is not None or an error status (400-599)."""
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)
                               or not 400 <= status <= 599):
        raise ValueError("token_error must be an HTTP error status (400-599) or None")


class Accounts:
    """The thread-safe login and token state of one practice site.

    The members area has ``members`` pages and the token API ``api_items``
    items. ``revoke_after=N`` revokes every session after each N-th member page
    served (counted across all sessions, never reset); ``token_ttl`` is a bearer
    token's lifetime in seconds, announced as ``expires_in`` unless ``send_expires_in`` is
    false; ``token_error=S`` makes ``POST /api/token`` answer status ``S`` (400-599) instead
    of granting. Both may be changed while the site runs. Revocations are counted on
    ``counters``.
    """

    def __init__(self, counters: SiteCounters, *, members: int = 200, api_items: int = 200,
                 revoke_after: int | None = None, token_ttl: float = 60.0,
                 username: str = "demo", password: str = "demo-password",
                 client_id: str = "demo-client", client_secret: str = "demo-secret",
                 send_expires_in: bool = True, token_error: int | None = None) -> None:
        if members < 0:
            raise ValueError("members must be >= 0")
        if api_items < 0:
            raise ValueError("api_items must be >= 0")
        if revoke_after is not None and revoke_after < 1:
            raise ValueError("revoke_after must be >= 1 (or None: never)")
        if not (math.isfinite(token_ttl) and token_ttl >= 0):
            raise ValueError("token_ttl must be a finite number of seconds >= 0")
        if not (username and password and client_id and client_secret):
            raise ValueError("the demo credentials must not be empty")
        check_token_error(token_error)
        self.members = members
        self.api_items = api_items
        self.revoke_after = revoke_after
        self.token_ttl = float(token_ttl)
        self.send_expires_in = bool(send_expires_in)
        self.token_error = token_error
        self.credentials = {"username": username, "password": password,
                            "client_id": client_id, "client_secret": client_secret}
        self._counters = counters
        self._lock = threading.Lock()
        self._sessions: set[str] = set()
        self._tokens: dict[str, float] = {}  # token -> time.monotonic() deadline
        self._purge_at = 1024  # prune expired tokens when this many are stored
        self._member_pages = 0  # for revoke_after; not reset with the counters

    # -- login sessions ---------------------------------------------------

    def check_login(self, username: str, password: str) -> bool:
        # Both comparisons always run, so timing says nothing about which failed.
        right_user = same_secret(username, self.credentials["username"])
        right_password = same_secret(password, self.credentials["password"])
        return right_user and right_password

    def open_session(self) -> str:
        """A new random session id, valid until logout or revocation."""
        session_id = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions.add(session_id)
        return session_id

    def close_session(self, session_ids: Iterable[str]) -> int:
        """Forget these sessions (a logout); return how many were live."""
        with self._lock:
            live = self._sessions.intersection(session_ids)
            self._sessions -= live
            return len(live)

    def has_session(self, session_ids: Iterable[str]) -> bool:
        with self._lock:
            return not self._sessions.isdisjoint(session_ids)

    def serve_member_page(self, session_ids: Iterable[str]) -> bool:
        """Whether a member page may be served; if so count it (maybe revoking all sessions).

        Checking, counting and revoking happen under one lock, so with
        ``revoke_after=N`` exactly N pages are served per revocation even when
        requests race.
        """
        with self._lock:
            if self._sessions.isdisjoint(session_ids):
                return False
            self._member_pages += 1
            if self.revoke_after and self._member_pages % self.revoke_after == 0:
                self._revoke_locked()
            return True

    @property
    def live_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def revoke_sessions(self) -> int:
        """Invalidate every live session; return how many there were."""
        with self._lock:
            return self._revoke_locked()

    def _revoke_locked(self) -> int:
        revoked = len(self._sessions)
        self._sessions.clear()
        self._counters.record("revocations")
        return revoked

    # -- bearer tokens ----------------------------------------------------

    def check_client(self, client_id: str, client_secret: str) -> bool:
        right_id = same_secret(client_id, self.credentials["client_id"])
        right_secret = same_secret(client_secret, self.credentials["client_secret"])
        return right_id and right_secret

    def grant_token(self) -> str:
        """A new random bearer token, valid for ``token_ttl`` seconds from now."""
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            if len(self._tokens) >= self._purge_at:
                self._tokens = {t: end for t, end in self._tokens.items() if end > now}
                self._purge_at = max(1024, 2 * len(self._tokens))
            self._tokens[token] = now + self.token_ttl
        return token

    def token_valid(self, token: str) -> bool:
        now = time.monotonic()
        with self._lock:
            deadline = self._tokens.get(token)
            if deadline is None:
                return False
            if now >= deadline:
                del self._tokens[token]
                return False
            return True

    def expire_tokens(self) -> int:
        """Invalidate every bearer token now; return how many were still valid."""
        now = time.monotonic()
        with self._lock:
            valid = sum(1 for deadline in self._tokens.values() if deadline > now)
            self._tokens.clear()
            return valid
