"""Following redirects one hop at a time, so that credentials are decided again for every hop.

requests' own redirect handling strips only ``Authorization`` when the host changes and forwards
every other header (``X-Api-Token``, say) to the new host. Here the caller recomputes token
headers for each hop's URL, and credentials the spider put on the request itself stay with the
host they were sent to.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping
from urllib.parse import urljoin, urlsplit

import requests

from ..exceptions import InvalidRequest
from ..request import Request

# Headers that carry credentials: never carried to another host, whoever set them.
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
_BODY_HEADERS = frozenset({"content-type", "content-length", "transfer-encoding"})


@dataclass(frozen=True, slots=True)
class Hop:
    """One request of a redirect chain: the first is the request itself."""

    method: str
    url: str
    body: bytes | None
    headers: Mapping[str, str]  # the spider's own headers, as they apply to this hop

    @classmethod
    def first(cls, request: Request) -> Hop:
        return cls(request.method, request.url, request.body, dict(request.headers or {}))


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def next_hop(hop: Hop, response: requests.Response, session: requests.Session, request: Request) -> Hop:
    """The hop a redirect response points to, with method, body and headers adjusted."""
    location = session.get_redirect_target(response)
    if not location:
        raise InvalidRequest(f"redirect without a Location from {hop.url}", request)
    url = urljoin(hop.url, location)
    if urlsplit(url).scheme not in ("http", "https"):
        raise InvalidRequest(f"redirect to a non-HTTP URL: {url[:200]}", request)
    method, body, headers = hop.method, hop.body, dict(hop.headers)
    # What browsers do, and RFC 9110 allows: 303 always, and 301/302 after a POST, become GET.
    if (response.status_code == 303 and method != "HEAD") or (
        response.status_code in (301, 302) and method == "POST"
    ):
        method, body = "GET", None
        headers = {k: v for k, v in headers.items() if k.lower() not in _BODY_HEADERS}
    if _origin(url) != _origin(hop.url):
        headers = {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}
    return replace(hop, method=method, url=url, body=body, headers=headers)
