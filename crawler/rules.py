"""Which discovered requests belong to the crawl: allowed domains, URL patterns, depth.

Rules are checked when a callback yields a request, before it reaches the frontier, so a
request that is filtered costs nothing more and is counted by its reason (``filtered:offsite``,
``filtered:denied``, ``filtered:not_allowed``, ``filtered:depth``). Start requests are the
user's explicit choice and are only checked for being fetchable.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit


def _idna(domain: str) -> str:
    # A leading dot (".example.com", as some crawlers write it) means the same: subdomains too.
    domain = domain.strip().lower().strip(".")
    if domain.isascii():
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


@dataclass(frozen=True, slots=True)
class CrawlRules:
    """``allowed_domains``: hosts a request may go to, each with its subdomains (none: any host).
    ``allow``: regular expressions of which a URL must match one (none: any URL).
    ``deny``: regular expressions no URL may match. ``max_depth``: links followed from a start
    request at most (None: no limit)."""

    allowed_domains: frozenset[str] = frozenset()
    allow: tuple[re.Pattern[str], ...] = ()
    deny: tuple[re.Pattern[str], ...] = ()
    max_depth: int | None = None

    @classmethod
    def build(
        cls,
        allowed_domains: Iterable[str] = (),
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        max_depth: int | None = None,
    ) -> CrawlRules:
        return cls(
            frozenset(_idna(domain) for domain in allowed_domains),
            tuple(re.compile(pattern) for pattern in allow),
            tuple(re.compile(pattern) for pattern in deny),
            max_depth,
        )

    def refusal(self, url: str, depth: int) -> str | None:
        """Why a request for ``url`` at ``depth`` is filtered out, or None if it is in the crawl."""
        if self.max_depth is not None and depth > self.max_depth:
            return "depth"
        if self.allowed_domains and not self.is_on_site(url):
            return "offsite"
        if self.deny and any(pattern.search(url) for pattern in self.deny):
            return "denied"
        if self.allow and not any(pattern.search(url) for pattern in self.allow):
            return "not_allowed"
        return None

    def is_on_site(self, url: str) -> bool:
        return self._netloc_on_site(urlsplit(url).netloc)

    # Asked for every link, about the few hosts a crawl visits: the answer is kept per netloc.
    @functools.lru_cache(maxsize=4096)  # noqa: B019 - the rules live as long as the crawl
    def _netloc_on_site(self, netloc: str) -> bool:
        host = _idna(urlsplit(f"//{netloc}").hostname or "")
        return any(host == domain or host.endswith("." + domain) for domain in self.allowed_domains)
