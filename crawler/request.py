"""The request value object, its JSON form for the checkpoint, and its dedupe fingerprint."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from w3lib.url import canonicalize_url

from .http.proxies import DIRECT, ProxyAddress

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Request:
    """One thing to fetch, and what to do with the answer.

    ``callback`` names a method of the spider (a bound method is accepted and stored by name), so a
    request can be written to the checkpoint as plain JSON and resumed by another process.
    ``meta`` must be JSON-serializable for the same reason; it reaches the callback as ``response.meta``.
    ``idempotent`` says whether the request may be retried after it may have reached the server;
    left as ``None`` it follows the HTTP method.
    ``dont_filter`` asks for a fetch even if the same request was seen before.
    ``forward_headers`` sends the request's own ``headers`` on to another origin it redirects
    to; by default only harmless ones go (see ``crawler.http.redirects.HARMLESS_HEADERS``), and
    none ever go from https down to http.
    ``redirects`` counts the redirects already followed to reach this request (a redirect to
    another origin is queued as a request of its own), so ``http.max_redirects`` holds across them;
    ``redirected_from`` is the URL whose redirect queued it.
    ``proxy`` sends it (and each of its redirect hops) through that proxy, ``http://host:port``
    or ``https://host:port``, or with ``"direct"`` (``crawler.http.proxies.DIRECT``) through none;
    None leaves it to the config (``http.proxy``). It is stored with the request, so it may hold
    no credentials: a proxy of the config's gets the config's, any other none.
    """

    # Defaults live in __init__, which also normalises (method case, str body, bound-method callback).
    url: str
    callback: str | None
    method: str
    headers: Mapping[str, str] | None
    body: bytes | None
    meta: Mapping[str, Any]
    priority: int
    dont_filter: bool
    idempotent: bool | None
    forward_headers: bool
    redirects: int
    redirected_from: str | None
    proxy: str | None

    def __init__(
        self,
        url: str,
        callback: str | Callable[..., Any] | None = None,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes | str | None = None,
        meta: Mapping[str, Any] | None = None,
        priority: int = 0,
        dont_filter: bool = False,
        idempotent: bool | None = None,
        forward_headers: bool = False,
        redirects: int = 0,
        redirected_from: str | None = None,
        proxy: str | None = None,
    ) -> None:
        if proxy is not None and proxy != DIRECT:
            _check_proxy(proxy)
        if callable(callback):
            callback = callback.__name__
        if isinstance(body, str):
            body = body.encode("utf-8")
        set_field = object.__setattr__  # frozen dataclass: assign once, here
        set_field(self, "url", url)
        set_field(self, "callback", callback)
        set_field(self, "method", method.upper())
        set_field(self, "headers", dict(headers) if headers else None)
        set_field(self, "body", body)
        set_field(self, "meta", dict(meta) if meta else {})
        set_field(self, "priority", priority)
        set_field(self, "dont_filter", dont_filter)
        set_field(self, "idempotent", idempotent)
        set_field(self, "forward_headers", forward_headers)
        set_field(self, "redirects", redirects)
        set_field(self, "redirected_from", redirected_from)
        set_field(self, "proxy", proxy)

    @property
    def is_idempotent(self) -> bool:
        if self.idempotent is not None:
            return self.idempotent
        return self.method in IDEMPOTENT_METHODS

    def replace(self, **changes: Any) -> Request:
        """A copy with some fields changed."""
        fields = {
            "url": self.url,
            "callback": self.callback,
            "method": self.method,
            "headers": self.headers,
            "body": self.body,
            "meta": self.meta,
            "priority": self.priority,
            "dont_filter": self.dont_filter,
            "idempotent": self.idempotent,
            "forward_headers": self.forward_headers,
            "redirects": self.redirects,
            "redirected_from": self.redirected_from,
            "proxy": self.proxy,
        }
        fields.update(changes)
        return Request(**fields)

    def to_json(self) -> str:
        """The checkpoint form: compact JSON, defaults left out. Raises TypeError if meta is not JSON."""
        data: dict[str, Any] = {"url": self.url}
        if self.callback:
            data["callback"] = self.callback
        if self.method != "GET":
            data["method"] = self.method
        if self.headers:
            data["headers"] = self.headers
        if self.body is not None:
            data["body"] = base64.b64encode(self.body).decode("ascii")
        if self.meta:
            data["meta"] = self.meta
        if self.priority:
            data["priority"] = self.priority
        if self.dont_filter:
            data["dont_filter"] = True
        if self.idempotent is not None:
            data["idempotent"] = self.idempotent
        if self.forward_headers:
            data["forward_headers"] = True
        if self.redirects:
            data["redirects"] = self.redirects
        if self.redirected_from:
            data["redirected_from"] = self.redirected_from
        if self.proxy is not None:
            data["proxy"] = self.proxy
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Request:
        data = json.loads(text)
        if "body" in data:
            data["body"] = base64.b64decode(data["body"])
        url = data.pop("url")
        return cls(url, **data)


def _check_proxy(proxy: str) -> None:
    try:
        address = ProxyAddress.parse(proxy)
    except ValueError as error:
        raise ValueError(f"Request(proxy=...): {error}") from None
    if address.has_credentials:
        # Never in the checkpoint: a proxy of the config's gets its credentials from there.
        raise ValueError(
            f"Request(proxy=...) holds credentials ({address.url} with a user or password): list the "
            "proxy in http.proxy, whose credentials come from the environment, and name it without them"
        )


# "//" or "http://" followed by nothing, or by a path: an authority that is there but empty.
# RFC 3986 makes such a link host-less; urljoin() would quietly turn it into the page itself.
_EMPTY_AUTHORITY = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:)?//(?:[/?#]|$)")


def has_empty_authority(url: str) -> bool:
    return _EMPTY_AUTHORITY.match(url) is not None


def host_key(url: str) -> str:
    """The host a request goes to, as per-host limits count it: ``host`` or ``host:port``
    (lowercase, default port left out)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    return host if port is None or DEFAULT_PORTS.get(parts.scheme) == port else f"{host}:{port}"


def canonical_url(url: str) -> str:
    """The URL form used for dedupe: w3lib's canonical form (fragment dropped, query sorted,
    percent-encoding normalised) without the scheme's default port."""
    canonical = canonicalize_url(url)
    parts = urlsplit(canonical)
    if parts.port is not None and DEFAULT_PORTS.get(parts.scheme) == parts.port:
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.username:
            userinfo = parts.username + (f":{parts.password}" if parts.password else "")
            netloc = f"{userinfo}@{netloc}"
        canonical = urlunsplit(parts._replace(netloc=netloc))
    return canonical


def fingerprint(spider: str, request: Request) -> bytes:
    """16 bytes that identify a request within a spider's crawl.

    Two requests with the same method, canonical URL and body are the same page. A request with
    ``dont_filter`` gets a random salt so it is always new.
    """
    if request.dont_filter:
        return _digest(spider, request.method, request.url, (request.body or b"") + os.urandom(16))
    if request.body:
        return _digest(spider, request.method, request.url, request.body)
    return _cached_digest(spider, request.method, request.url)


def _digest(spider: str, method: str, url: str, body: bytes) -> bytes:
    digest = hashlib.blake2b(digest_size=16)
    for part in (spider.encode(), method.encode(), canonical_url(url).encode()):
        digest.update(part)
        digest.update(b"\0")
    digest.update(body)
    return digest.digest()


# Pages link to the same URLs over and over (navigation, related items); canonicalising each
# one again is most of the engine's per-link cost. Bounded in entries, and only bodiless
# requests are cached, so memory stays flat. A page's links are fingerprinted again as they are
# deduped and stored, so the bound holds one sitemap's 50,000 URLs with room to spare: below
# that, a big sitemap's first URLs are gone before their second look.
@functools.lru_cache(maxsize=65536)
def _cached_digest(spider: str, method: str, url: str) -> bytes:
    return _digest(spider, method, url, b"")
