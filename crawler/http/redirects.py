"""Following redirects one hop at a time, so that credentials are decided again for every hop.

requests' own redirect handling strips only ``Authorization`` when the host changes and forwards
every other header (``X-Api-Token``, say) to the new host. Here the caller recomputes token
headers for each hop's URL, and the request's own headers go to another origin only if they are
harmless (``HARMLESS_HEADERS``) or the request opted in with ``forward_headers``; never, even
then, from https down to http.

Every Location is put in the crawl's one URL form (``crawler.urls``) before anything is decided
on it, so the host checked is the host connected to.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping
from urllib.parse import urlsplit

import requests

from ..exceptions import InvalidRedirect, MalformedURL
from ..request import Request
from ..urls import WEB_SCHEMES, normalize_url, scheme_of

# Headers that carry credentials; a request that sets its own is warned about.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
# Headers that only shape the answer and carry nothing secret: they follow a redirect anywhere.
HARMLESS_HEADERS = frozenset(
    {
        "accept",
        "accept-encoding",
        "accept-language",
        "cache-control",
        "dnt",
        "pragma",
        "upgrade-insecure-requests",
        "user-agent",
    }
)
_BODY_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Hop:
    """One request of a redirect chain: the first is the request itself."""

    method: str
    url: str
    body: bytes | None
    headers: Mapping[str, str]  # the request's own headers, as they apply to this hop
    forward_headers: bool = False

    @classmethod
    def first(cls, request: Request) -> Hop:
        return cls(request.method, request.url, request.body, dict(request.headers or {}), request.forward_headers)


def origin(url: str) -> tuple[str, str | None, int | None]:
    """Scheme, host and port of a URL in normal form (whose default port is already left out)."""
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def next_hop(hop: Hop, response: requests.Response, request: Request) -> Hop:
    """The hop a redirect response points to, with method, body and headers adjusted."""
    location = response.headers.get("Location")
    if not location:
        raise InvalidRedirect(f"redirect without a Location from {hop.url}", request)
    try:
        # http.client reads header bytes as Latin-1; a Location is UTF-8 (RFC 3986 §3.2.2).
        location = location.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise InvalidRedirect(f"redirect from {hop.url} to a Location that is not UTF-8", request) from None
    try:
        url = normalize_url(location, hop.url)
    except MalformedURL as error:
        raise InvalidRedirect(f"redirect from {hop.url} to a malformed URL: {error}", request) from None
    if scheme_of(url) not in WEB_SCHEMES:
        raise InvalidRedirect(f"redirect to a non-HTTP URL: {url[:200]}", request)
    method, body, headers = hop.method, hop.body, dict(hop.headers)
    # What browsers do, and RFC 9110 allows: 303 always, and 301/302 after a POST, become GET.
    if (response.status_code == 303 and method != "HEAD") or (
        response.status_code in (301, 302) and method == "POST"
    ):
        method, body = "GET", None
        headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
    if origin(url) != origin(hop.url):
        downgrade = scheme_of(hop.url) == "https" and scheme_of(url) == "http"
        if downgrade or not hop.forward_headers:
            headers = {
                k: v
                for k, v in headers.items()
                if k.lower() in HARMLESS_HEADERS or (k.lower() == "content-type" and body is not None)
            }
    return replace(hop, method=method, url=url, body=body, headers=headers)
