"""The crawl's cookie jar: shared by every worker's session, and loud about cookies it cannot use.

Every worker thread has its own session, but they all hold this one jar, so the login's cookies
(and any the site rotates later) reach every worker. The jar is saved beside the checkpoint, in a
file only its owner can read, so a resumed crawl can reuse a login that is still valid.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from http.cookiejar import Cookie
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

import requests
from requests.cookies import RequestsCookieJar, create_cookie, extract_cookies_to_jar, get_cookie_header

from ..stats import Stats

logger = logging.getLogger(__name__)


def domain_matches(host: str, domain: str) -> bool:
    """Whether a cookie for ``domain`` is sent to ``host`` (RFC 6265 domain matching)."""
    domain = domain.lstrip(".").lower()
    host = host.lower()
    return host == domain or host.endswith("." + domain)


def cookie_to_dict(cookie: Cookie) -> dict[str, Any]:
    """A cookie as plain JSON data: what a saved jar holds, and what crosses between machines."""
    return {
        "name": cookie.name,
        "value": cookie.value,
        "domain": cookie.domain,
        "path": cookie.path,
        "secure": cookie.secure,
        "expires": cookie.expires,
        "domain_specified": cookie.domain_specified,
        "rest": {"HttpOnly": None} if cookie.has_nonstandard_attr("HttpOnly") else {},
    }


def cookie_from_dict(entry: Mapping[str, Any]) -> Cookie:
    """The cookie ``cookie_to_dict`` made ``entry`` of."""
    return create_cookie(
        entry["name"],
        entry["value"],
        domain=entry["domain"],
        path=entry["path"],
        secure=entry["secure"],
        expires=entry["expires"],
        rest=entry.get("rest", {}),
    )


class CrawlCookieJar(RequestsCookieJar):
    """A cookie jar safe to share between threads, that keeps a newer login's cookies from being
    undone by answers to requests sent under an older one, and can widen cookies to a parent
    domain.

    **Login generations.** ``generation`` counts the logins whose cookies the jar holds
    (``adopt_login``). Each cookie remembers the generation of the exchange that last set or
    deleted it, and an exchange may change a cookie only if it was sent under that generation
    or a later one. Without this, a site that revokes a session and answers every request still
    carrying it with ``Set-Cookie: sessionid=""; Max-Age=0`` (Django does) lets a late answer to
    a request sent before the re-login delete the new login's cookie, for every worker.

    ``parent_domain`` (e.g. ``example.com``) makes a cookie set by any host under it valid for all
    of them, for sites that log in on one subdomain and serve pages from another.
    """

    def __init__(self, parent_domain: str | None = None) -> None:
        super().__init__()
        self.parent_domain = parent_domain.lstrip(".").lower() if parent_domain else None
        self.generation = 0
        # (domain, path, name) -> the generation of the exchange that last set or deleted it.
        self._stamps: dict[tuple[str, str, str], int] = {}
        # Set only while one thread, holding the lock, applies an exchange's cookies.
        self._applying: int | None = None
        self._ignored = 0

    def __iter__(self) -> Iterator[Cookie]:
        # requests copies a jar by iterating it; iterating while another thread stores a cookie
        # would fail with "dictionary changed size", so take a snapshot.
        with self._cookies_lock:
            return iter(list(super().__iter__()))

    def header_for(self, request: requests.PreparedRequest) -> tuple[str | None, int]:
        """The ``Cookie`` header for ``request``, and the login generation it belongs to (read
        together, so a re-login cannot fall between them)."""
        with self._cookies_lock:
            return get_cookie_header(self, request), self.generation

    def extract_from(self, response: requests.Response, request: requests.PreparedRequest, generation: int) -> int:
        """Store what ``response`` (to ``request``, sent under ``generation``) sets or deletes,
        except where a later login already changed that cookie; how many changes were ignored."""
        with self._cookies_lock:
            self._applying, self._ignored = generation, 0
            try:
                extract_cookies_to_jar(self, request, response.raw)
            finally:
                self._applying = None
            return self._ignored

    def adopt_login(self, cookies: Iterable[Cookie], generation: int | None = None) -> int:
        """Take the cookies of a new login as one generation newer (or as ``generation``, the
        number another process's jar gave that login); returns that generation."""
        with self._cookies_lock:
            self.generation = self.generation + 1 if generation is None else generation
            self._applying = self.generation
            try:
                for cookie in cookies:
                    self.set_cookie(cookie)
            finally:
                self._applying = None
            return self.generation

    def set_cookie(self, cookie: Cookie, *args: object, **kwargs: object) -> None:
        if (widened := self._widened(cookie.domain)) != cookie.domain:
            cookie.domain = widened
            cookie.domain_specified = True
            cookie.domain_initial_dot = True
        with self._cookies_lock:
            if self._stale(cookie.domain, cookie.path, cookie.name):
                return
            super().set_cookie(cookie, *args, **kwargs)

    def clear(self, domain: str | None = None, path: str | None = None, name: str | None = None) -> None:
        with self._cookies_lock:
            # A Set-Cookie that expires a cookie arrives here, one cookie at a time.
            if domain is not None and name is not None:
                domain = self._widened(domain)
                if self._stale(domain, path or "/", name):
                    return
            super().clear(domain, path, name)

    def _widened(self, domain: str) -> str:
        parent = self.parent_domain
        if parent and domain_matches(domain, parent) and domain.lstrip(".") != parent:
            return "." + parent
        return domain

    def _stale(self, domain: str, path: str, name: str) -> bool:
        """Whether the exchange being applied is older than the last change to this cookie (and
        if not, stamps the cookie with it). Called with the lock held."""
        applying = self._applying
        if applying is None:
            return False
        key = (domain, path, name)
        if self._stamps.get(key, 0) > applying:
            self._ignored += 1
            return True
        self._stamps[key] = applying
        return False

    def save(self, path: Path) -> None:
        """Write the cookies to ``path``, readable by the owner only, atomically."""
        cookies = [cookie_to_dict(cookie) for cookie in self]
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(cookies, handle)
        os.chmod(temporary, 0o600)  # in case the file existed with wider permissions
        os.replace(temporary, path)

    def load(self, path: Path) -> int:
        """Add the cookies saved at ``path`` as a login of their own (expired ones are dropped);
        returns how many."""
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as error:
            logger.warning("ignoring unreadable saved cookies in %s: %s", path, error)
            return 0
        cookies = [cookie_from_dict(entry) for entry in saved]
        if live := [cookie for cookie in cookies if not cookie.is_expired()]:
            self.adopt_login(live)
        return len(live)


class CookieAudit:
    """Reports, once per cookie, a cookie the site sets that the crawl will never send back.

    A ``Set-Cookie`` whose ``Domain`` does not cover the host that sent it is dropped by every
    cookie jar without a word; a login that depends on it then fails mysteriously later.
    """

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self._reported: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def inspect(self, host: str, set_cookie_headers: list[str]) -> None:
        for header in set_cookie_headers:
            parsed = SimpleCookie()
            try:
                parsed.load(header)
            except CookieError:
                continue
            for name, morsel in parsed.items():
                domain = morsel["domain"]
                if domain and not domain_matches(host, domain):
                    self._report(name, domain, host)

    def _report(self, name: str, domain: str, host: str) -> None:
        with self._lock:
            if (name, domain) in self._reported:
                return
            self._reported.add((name, domain))
        self.stats.inc("cookie_warnings")
        logger.warning(
            "cookie %r was set by %s for domain %s, which does not cover %s: it is never sent back. "
            "If the site's hosts share a parent domain, set cookie_domain for this spider",
            name, host, domain.lstrip("."), host,
        )
