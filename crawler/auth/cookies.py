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
from collections.abc import Iterator
from http.cookiejar import Cookie
from http.cookies import CookieError, SimpleCookie
from pathlib import Path

from requests.cookies import RequestsCookieJar

from ..stats import Stats

logger = logging.getLogger(__name__)


def domain_matches(host: str, domain: str) -> bool:
    """Whether a cookie for ``domain`` is sent to ``host`` (RFC 6265 domain matching)."""
    domain = domain.lstrip(".").lower()
    host = host.lower()
    return host == domain or host.endswith("." + domain)


class CrawlCookieJar(RequestsCookieJar):
    """A cookie jar safe to share between threads, that can widen cookies to a parent domain.

    ``parent_domain`` (e.g. ``example.com``) makes a cookie set by any host under it valid for all
    of them, for sites that log in on one subdomain and serve pages from another.
    """

    def __init__(self, parent_domain: str | None = None) -> None:
        super().__init__()
        self.parent_domain = parent_domain.lstrip(".").lower() if parent_domain else None

    def __iter__(self) -> Iterator[Cookie]:
        # requests copies the jar for every request by iterating it; iterating while another
        # thread stores a cookie would fail with "dictionary changed size", so take a snapshot.
        with self._cookies_lock:
            return iter(list(super().__iter__()))

    def set_cookie(self, cookie: Cookie, *args: object, **kwargs: object) -> None:
        parent = self.parent_domain
        if parent and domain_matches(cookie.domain, parent) and cookie.domain.lstrip(".") != parent:
            cookie.domain = "." + parent
            cookie.domain_specified = True
            cookie.domain_initial_dot = True
        super().set_cookie(cookie, *args, **kwargs)

    def save(self, path: Path) -> None:
        """Write the cookies to ``path``, readable by the owner only, atomically."""
        cookies = [
            {
                "name": c.name,
                "value": c.value,
                "domain": c.domain,
                "path": c.path,
                "secure": c.secure,
                "expires": c.expires,
                "domain_specified": c.domain_specified,
                "rest": {"HttpOnly": None} if c.has_nonstandard_attr("HttpOnly") else {},
            }
            for c in self
        ]
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(cookies, handle)
        os.chmod(temporary, 0o600)  # in case the file existed with wider permissions
        os.replace(temporary, path)

    def load(self, path: Path) -> int:
        """Add the cookies saved at ``path`` (expired ones are dropped); returns how many."""
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as error:
            logger.warning("ignoring unreadable saved cookies in %s: %s", path, error)
            return 0
        for entry in saved:
            self.set(
                entry["name"],
                entry["value"],
                domain=entry["domain"],
                path=entry["path"],
                secure=entry["secure"],
                expires=entry["expires"],
                rest=entry.get("rest", {}),
            )
        self.clear_expired_cookies()
        return len(self)


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
