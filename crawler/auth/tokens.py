"""Headers computed for each request as it is sent: bearer tokens, signatures, rotating keys.

They are never put in ``session.headers`` and never stored with a queued request, so a request
queued before a token refresh goes out with the new token. Each source is scoped to hosts and is
asked again for every redirect hop, so a redirect to another host never carries the token.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote_plus, urlsplit

import requests

from ..exceptions import LoginFailed
from ..http.sessions import exchange, prepare
from ..request import DEFAULT_PORTS
from ..stats import Stats


class TokenAuth(Protocol):
    def headers_for(self, method: str, url: str, session: requests.Session) -> Mapping[str, str]:
        """Headers for this request (or redirect hop); empty when ``url`` is not in scope."""

    def reject(self, sent: Mapping[str, str]) -> bool:
        """The server answered 401 to a request sent with ``sent``; True if a retry may help."""


class HostScope:
    """Where a credential belongs: entries ``host`` (any port), ``host:port`` (that port only),
    or either after ``https://`` or ``http://`` (that scheme only).

    ``scheme`` is the scheme entries without one get (None: any). URLs are read in the crawl's
    one normal form (``crawler.urls``), the form that is sent.
    """

    def __init__(self, hosts: Iterable[str], scheme: str | None = None) -> None:
        entries = set()
        for entry in hosts:
            entry_scheme, separator, rest = entry.lower().rpartition("://")
            entries.add((entry_scheme if separator else scheme, rest))
        if not entries:
            raise ValueError("a token needs at least one host to belong to")
        self._entries = frozenset(entries)

    def __contains__(self, url: object) -> bool:
        if not isinstance(url, str):
            return False
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # an IPv6 literal, written in brackets in the entries too
        port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        return any(
            (scheme is None or scheme == parts.scheme) and entry in (host, f"{host}:{port}")
            for scheme, entry in self._entries
        )

    def __repr__(self) -> str:
        shown = sorted(f"{scheme}://{entry}" if scheme else entry for scheme, entry in self._entries)
        return f"HostScope({shown})"


class _Computed(dict[str, str]):
    """Headers a HeaderAuth computed, and how many rejections it had seen when it did."""

    def __init__(self, headers: Mapping[str, str], rejections: int) -> None:
        super().__init__(headers)
        self.rejections = rejections


class HeaderAuth:
    """Headers from ``compute(method, url)``, for requests to ``hosts`` only.

    For signatures over the URL and a timestamp, or keys that rotate: ``compute`` runs for every
    request and every redirect hop, in the worker thread that sends it. When a request that
    carried them is answered 401, ``on_rejected()`` (say, fetch a new key) runs once for all
    the requests computed before it, and the request is replayed once with headers computed anew.
    """

    def __init__(
        self,
        hosts: Iterable[str],
        compute: Callable[[str, str], Mapping[str, str]],
        on_rejected: Callable[[], object] | None = None,
    ) -> None:
        self.scope = HostScope(hosts)
        self.compute = compute
        self.on_rejected = on_rejected
        self._rejections = 0
        self._lock = threading.Lock()

    def headers_for(self, method: str, url: str, session: requests.Session) -> Mapping[str, str]:
        if url not in self.scope:
            return {}
        return _Computed(self.compute(method, url), self._rejections)

    def reject(self, sent: Mapping[str, str]) -> bool:
        with self._lock:
            # Single flight: only a rejection of headers computed since the last one counts.
            if self.on_rejected is not None and getattr(sent, "rejections", None) == self._rejections:
                self.on_rejected()
                self._rejections += 1
        return True


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    refresh_at: float  # time.monotonic(): when to get the next one


# A token is refreshed at most this far (as a fraction of its lifetime) before it expires: a
# margin longer than the lifetime would otherwise make every request fetch a new token.
MAX_MARGIN_FRACTION = 0.25
# Lifetimes below this are taken as this: an endpoint announcing 0 would cost a grant a request.
_MIN_LIFETIME = 1.0


class BearerToken:
    """A short-lived token from a token endpoint, refreshed once when it expires.

    Refreshing is single-flight: the first worker to find the token expired fetches a new one
    while the others wait for it, so the site sees one grant per expiry, not one per thread.
    A 401 for a request sent with the current token also makes the next request refresh it.

    The grant is posted as a form (``body="form"``) or a JSON object (``"json"``); with
    ``client_auth="basic"`` the ``client_id`` and ``client_secret`` fields go in HTTP Basic
    (RFC 6749's ``client_secret_basic``) instead of the body. It is refreshed
    ``refresh_margin`` seconds before the announced expiry, at most a quarter of the
    lifetime; an endpoint that announces none gets ``default_lifetime``. A token obtained
    over https is sent over https only, whatever ``hosts`` say.
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
        body: str = "form",
        client_auth: str = "body",
    ) -> None:
        self.token_url = token_url
        self.form = dict(form)
        self.scope = HostScope(hosts, "https" if token_url.startswith("https:") else None)
        self.stats = stats
        self.timeout = timeout
        self.secret_sources = tuple(secret_sources)
        self.token_field = token_field
        self.expires_field = expires_field
        self.header = header
        self.scheme = scheme
        self.refresh_margin = refresh_margin
        self.default_lifetime = default_lifetime
        self.body = body
        self.client_auth = client_auth
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

    @staticmethod
    def _fresh(token: _Token | None) -> bool:
        return token is not None and time.monotonic() < token.refresh_at

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

    def _grant_request(self, session: requests.Session) -> requests.PreparedRequest:
        fields = dict(self.form)
        headers = {"Accept": "application/json"}
        if self.client_auth == "basic":
            # RFC 6749 §2.3.1: each part form-encoded, then joined as HTTP Basic credentials.
            pair = f"{quote_plus(fields.pop('client_id'))}:{quote_plus(fields.pop('client_secret'))}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        if self.body == "json":
            return prepare(session, "POST", self.token_url, headers=headers, json=fields)
        return prepare(session, "POST", self.token_url, headers=headers, body=fields)

    def _grant(self, session: requests.Session) -> _Token:
        # The grant goes through the worker's connections but without the crawl's cookies: the
        # token endpoint gets the client credentials and nothing else of the crawl's.
        sources = ", ".join(f"${name}" for name in self.secret_sources) or "the configured fields"
        try:
            answer = exchange(session, self._grant_request(session), self.timeout)
            status = answer.status_code
            content = answer.content
            answer.close()
        except requests.RequestException as error:
            raise LoginFailed(
                f"cannot get a token from {self.token_url}: {type(error).__name__}; "
                f"the crawl stops until it can (credentials in {sources})"
            ) from None
        if status >= 400:
            problem = "refused the credentials" if status < 500 else "failed"
            raise LoginFailed(f"token endpoint {self.token_url} {problem} (HTTP {status}); check {sources}")
        try:
            data = json.loads(content)
            value = data[self.token_field]
            lifetime = float(data.get(self.expires_field, self.default_lifetime))
        except (ValueError, KeyError, TypeError) as error:
            raise LoginFailed(
                f"no usable token from {self.token_url}: {type(error).__name__} (credentials in {sources})"
            ) from None
        if not isinstance(value, str) or not value:
            raise LoginFailed(f"token endpoint {self.token_url} answered without a {self.token_field!r}")
        if not lifetime >= _MIN_LIFETIME:  # NaN included
            lifetime = _MIN_LIFETIME
        margin = min(self.refresh_margin, lifetime * MAX_MARGIN_FRACTION)
        return _Token(value, time.monotonic() + lifetime - margin)
