"""Headers computed for each request as it is sent: bearer tokens, signatures, rotating keys.

They are never put in ``session.headers`` and never stored with a queued request, so a request
queued before a token refresh goes out with the new token. Each source is scoped to hosts and is
asked again for every redirect hop, so a redirect to another host never carries the token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

import requests

from ..exceptions import LoginFailed
from ..request import DEFAULT_PORTS
from ..stats import Stats


class TokenAuth(Protocol):
    def headers_for(self, method: str, url: str, session: requests.Session) -> Mapping[str, str]:
        """Headers for this request (or redirect hop); empty when ``url`` is not in scope."""

    def reject(self, sent: Mapping[str, str]) -> bool:
        """The server answered 401 to a request sent with ``sent``; True if a retry may help."""


class HostScope:
    """The hosts a credential belongs to: ``host`` (any port) or ``host:port`` (that port only)."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self._entries = frozenset(host.lower() for host in hosts)
        if not self._entries:
            raise ValueError("a token needs at least one host to belong to")

    def __contains__(self, url: object) -> bool:
        if not isinstance(url, str):
            return False
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        return host in self._entries or f"{host}:{port}" in self._entries

    def __repr__(self) -> str:
        return f"HostScope({sorted(self._entries)})"


class HeaderAuth:
    """Headers from ``compute(method, url)``, for requests to ``hosts`` only.

    For signatures over the URL and a timestamp, or keys that rotate: ``compute`` runs for every
    request and every redirect hop, in the worker thread that sends it.
    """

    def __init__(self, hosts: Iterable[str], compute: Callable[[str, str], Mapping[str, str]]) -> None:
        self.scope = HostScope(hosts)
        self.compute = compute

    def headers_for(self, method: str, url: str, session: requests.Session) -> Mapping[str, str]:
        return self.compute(method, url) if url in self.scope else {}

    def reject(self, sent: Mapping[str, str]) -> bool:
        return False  # computed fresh for every request: a replay would send the same


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    expires_at: float  # time.monotonic()


class BearerToken:
    """A short-lived token from a token endpoint, refreshed once when it expires.

    Refreshing is single-flight: the first worker to find the token expired fetches a new one
    while the others wait for it, so the site sees one grant per expiry, not one per thread.
    A 401 for a request sent with the current token also makes the next request refresh it.
    """

    def __init__(
        self,
        token_url: str,
        form: Mapping[str, str],
        *,
        hosts: Iterable[str],
        stats: Stats,
        timeout: tuple[float, float],
        secret_sources: Iterable[str] = (),
        token_field: str = "access_token",
        expires_field: str = "expires_in",
        header: str = "Authorization",
        scheme: str = "Bearer",
        refresh_margin: float = 5.0,
        default_lifetime: float = 300.0,
    ) -> None:
        self.token_url = token_url
        self.form = dict(form)
        self.scope = HostScope(hosts)
        self.stats = stats
        self.timeout = timeout
        self.secret_sources = tuple(secret_sources)
        self.token_field = token_field
        self.expires_field = expires_field
        self.header = header
        self.scheme = scheme
        self.refresh_margin = refresh_margin
        self.default_lifetime = default_lifetime
        self._token: _Token | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never shows the token or the form's secrets
        return f"BearerToken({self.token_url!r}, scope={self.scope!r})"

    def headers_for(self, method: str, url: str, session: requests.Session) -> Mapping[str, str]:
        if url not in self.scope:
            return {}
        return {self.header: self._formatted(self._current(session).value)}

    def reject(self, sent: Mapping[str, str]) -> bool:
        value = next((v for k, v in sent.items() if k.lower() == self.header.lower()), None)
        if value is None:
            return False
        with self._lock:
            if self._token is not None and self._formatted(self._token.value) == value:
                self._token = None  # the server disagrees with the announced expiry
        return True

    def _formatted(self, token: str) -> str:
        return f"{self.scheme} {token}" if self.scheme else token

    def _fresh(self, token: _Token | None) -> bool:
        return token is not None and time.monotonic() < token.expires_at - self.refresh_margin

    def _current(self, session: requests.Session) -> _Token:
        token = self._token
        if self._fresh(token):
            assert token is not None
            return token
        with self._lock:
            if not self._fresh(self._token):
                self._token = self._grant(session)
                self.stats.inc("token_refreshes")
            assert self._token is not None
            return self._token

    def _grant(self, session: requests.Session) -> _Token:
        sources = ", ".join(f"${name}" for name in self.secret_sources) or "the configured fields"
        try:
            answer = session.post(self.token_url, data=self.form, timeout=self.timeout)
            answer.raise_for_status()
            data = answer.json()
            value = data[self.token_field]
            lifetime = float(data.get(self.expires_field, self.default_lifetime))
        except requests.HTTPError as error:
            raise LoginFailed(
                f"token endpoint {self.token_url} refused the credentials "
                f"(HTTP {error.response.status_code}); check {sources}"
            ) from None
        except (requests.RequestException, ValueError, KeyError, TypeError) as error:
            raise LoginFailed(
                f"no usable token from {self.token_url}: {type(error).__name__}"
            ) from None
        if not isinstance(value, str) or not value:
            raise LoginFailed(f"token endpoint {self.token_url} answered without a {self.token_field!r}")
        return _Token(value, time.monotonic() + max(0.0, lifetime))
