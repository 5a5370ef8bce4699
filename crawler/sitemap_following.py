"""What a spider's sitemaps lead to: which of their entries become requests, with which callback.

Made once per spider from its ``sitemap_*`` attributes (see :class:`crawler.spider.Spider`):
``sitemap_rules`` pick a page's callback by the first regex found in its URL, ``sitemap_follow``
picks which sitemaps an index (or a robots.txt) names are read, and ``sitemap_after`` leaves out
pages and sitemaps whose lastmod is older. A bad regex, a date that is not one, or a rule naming
a callback the spider lacks is an error when this is made: at the start of the crawl, not at
every sitemap.

What is left out is counted by reason, as the crawl counts its links: ``filtered:sitemap_rule``
(a page no rule picks), ``filtered:sitemap_follow``, ``filtered:lastmod``. What is broken is
counted and logged once per sitemap: ``malformed:sitemap:<reason>`` for a document that breaks
off (see :class:`crawler.sitemaps.SitemapError`; what was read before the break is kept),
``malformed:sitemap:no_loc`` for an entry without a usable ``<loc>``,
``malformed:sitemap:lastmod`` for a lastmod that is not a date (its URL is kept).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from protego import Protego

from .content import TEXT
from .request import Request
from .response import Response
from .sitemaps import SitemapEntry, SitemapError, as_cutoff, chunks_of, parse_lastmod, read_sitemap
from .stats import Stats

if TYPE_CHECKING:  # the spider calls this module: only its type is needed here
    from .spider import Spider

logger = logging.getLogger(__name__)

#: The callback that reads sitemaps (a method of every spider).
SITEMAP_CALLBACK = "parse_sitemap"

#: What a sitemap may be served as: XML or text, and gzip under the names servers give it.
SITEMAP_CONTENT_TYPES = (
    *TEXT.patterns,
    "application/gzip",
    "application/x-gzip",
    "application/gzip-compressed",
    "application/x-gzip-compressed",
    "application/octet-stream",
    "binary/octet-stream",
)


@dataclass(frozen=True, slots=True)
class SitemapFollowing:
    """A spider's sitemap attributes, checked and compiled."""

    rules: tuple[tuple[re.Pattern[str], str], ...]
    follow: tuple[re.Pattern[str], ...]
    after: datetime | None
    alternates: bool
    max_size: int
    max_urls: int

    @classmethod
    def of(cls, spider: Spider) -> SitemapFollowing:
        """Raises ValueError, naming the attribute, for what cannot work."""
        rules = []
        for pattern, callback in spider.sitemap_rules:
            name = callback if isinstance(callback, str) else getattr(callback, "__name__", repr(callback))
            if not callable(getattr(spider, name, None)):
                raise ValueError(f"sitemap_rules names the callback {name!r}, which spider {spider.name} does not have")
            rules.append((_compiled("sitemap_rules", pattern), name))
        try:
            after = None if spider.sitemap_after is None else as_cutoff(spider.sitemap_after)
        except ValueError as error:
            raise ValueError(f"sitemap_after: {error}") from None
        for limit in ("sitemap_max_size", "sitemap_max_urls"):
            if getattr(spider, limit) < 1:
                raise ValueError(f"{limit} must be at least 1")
        follow = tuple(_compiled("sitemap_follow", pattern) for pattern in spider.sitemap_follow)
        return cls(
            tuple(rules), follow, after, bool(spider.sitemap_alternate_links), spider.sitemap_max_size,
            spider.sitemap_max_urls,
        )

    def requests(self, response: Response, stats: Stats) -> Iterator[Request]:
        """The requests ``response`` (a sitemap, or a robots.txt) leads to, as it is read."""
        if urlsplit(response.url).path == "/robots.txt":
            yield from self._from_robots(response, stats)
        else:
            yield from _Reading(self, response, stats).requests()

    def callback_for(self, url: str) -> str | None:
        """The callback of the first rule whose regex is found in ``url``; None: no rule picks it."""
        for pattern, callback in self.rules:
            if pattern.search(url):
                return callback
        return None

    def follows(self, url: str) -> bool:
        return any(pattern.search(url) for pattern in self.follow)

    def _from_robots(self, response: Response, stats: Stats) -> Iterator[Request]:
        # A robots.txt's rules are the robots.txt cache's business; here it is a list of sitemaps.
        robots = Protego.parse(response.body.decode("utf-8-sig", errors="replace"))
        for url in robots.sitemaps:
            if self.follows(url):
                yield Request(response.urljoin(url.strip()), callback=SITEMAP_CALLBACK)
            else:
                stats.inc("filtered:sitemap_follow")


class _Reading:
    """One sitemap being read: its entries turned into requests, and what went wrong counted."""

    def __init__(self, following: SitemapFollowing, response: Response, stats: Stats) -> None:
        self.following = following
        self.response = response
        self.stats = stats
        self.entries = 0
        self.without_loc = 0
        self.bad_lastmods = 0

    def requests(self) -> Iterator[Request]:
        url = self.response.url
        try:
            for entry in read_sitemap(
                chunks_of(self.response.body), max_size=self.following.max_size, max_entries=self.following.max_urls
            ):
                self.entries += 1
                yield from self._requests_for(entry)
        except SitemapError as error:
            self.stats.inc(f"malformed:sitemap:{error.reason}")
            logger.warning(
                "sitemap %s broke off after %d entries, which are kept: %s (counted as malformed:sitemap:%s)",
                url, self.entries, error.detail, error.reason,
            )
        # Once per sitemap: a generator of sitemaps that gets an entry wrong gets all of them wrong.
        if self.without_loc:
            logger.warning("sitemap %s has %d entries without a usable <loc>; they were left out", url, self.without_loc)
        if self.bad_lastmods:
            logger.warning("sitemap %s has %d lastmod values that are not dates; their URLs were kept", url, self.bad_lastmods)

    def _requests_for(self, entry: SitemapEntry) -> Iterator[Request]:
        following = self.following
        if not entry.url:
            self.without_loc += 1
            self.stats.inc("malformed:sitemap:no_loc")
            return
        if following.after is not None and entry.lastmod is not None and self._older(entry.lastmod, following.after):
            self.stats.inc("filtered:lastmod")
            return
        if entry.is_sitemap:
            if following.follows(entry.url):
                yield Request(entry.url, callback=SITEMAP_CALLBACK)
            else:
                self.stats.inc("filtered:sitemap_follow")
            return
        for url in (entry.url, *entry.alternates) if following.alternates else (entry.url,):
            if (callback := following.callback_for(url)) is not None:
                yield Request(url, callback=callback)
            else:
                self.stats.inc("filtered:sitemap_rule")

    def _older(self, lastmod: str, cutoff: datetime) -> bool:
        moment = parse_lastmod(lastmod)
        if moment is None:
            self.bad_lastmods += 1
            self.stats.inc("malformed:sitemap:lastmod")
            return False
        return moment < cutoff


def _compiled(attribute: str, pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"{attribute}: {pattern!r} is not a regular expression: {error}") from None
