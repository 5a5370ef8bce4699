"""Responses kept on disk between runs, so that running a spider again while it is being written
does not fetch the site again (``[http_cache]``, or ``crawler run --cache``).

requests-cache makes the decisions (expiry, which statuses are kept, the server's Cache-Control
and Expires when they are honoured, revalidation by ETag and Last-Modified) and keeps the
responses, in its SQLite backend. Its ``CachedSession`` is not used: our requests are sent below
``Session.send`` (see ``http.sessions.exchange``), so the fetcher asks the cache itself, once per
request of the crawl: a hit stands for the whole fetch, its redirects within the origin, its
login and its tokens, and opens no connection.

What is kept is what a spider sees, and nothing that authenticates: an answer's Set-Cookie is
not kept (replayed from the cache, an old session cookie would undo the login), and the request
kept beside it has requests-cache's redaction of credentials (Authorization, API keys). Cookies
and tokens are not part of the key: a page is the same page, logged in or not, as in Scrapy's
cache. Entries are stored as JSON, not pickled, in a file only its owner can read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from http import HTTPStatus
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.structures import CaseInsensitiveDict
from requests_cache import CachedResponse, CacheSettings, SQLiteCache
from requests_cache.models import CachedRequest
from requests_cache.policy.actions import CacheActions

from ..exceptions import CrawlerError
from ..request import Request
from ..response import Response
from ..stats import Stats

logger = logging.getLogger(__name__)

# Headers that are never kept: they authenticate the one who received them.
_NOT_KEPT = ("Set-Cookie", "Set-Cookie2")


class HttpCacheError(CrawlerError):
    """The cache file cannot be opened (not a cache, or not ours to write)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: cannot open the HTTP cache ({self.reason}); delete it to start a new one"


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """``expire_after``: seconds an entry is fresh (None: until it is deleted). ``statuses``: the
    statuses kept. ``honour_headers``: the server's Cache-Control and Expires decide over
    ``expire_after``, and no-store is obeyed; otherwise they are ignored, as a cache for
    developing a spider usually wants. A stale entry with an ETag or Last-Modified is revalidated
    either way: a 304 costs a request but no body."""

    expire_after: float | None = None
    statuses: frozenset[int] = frozenset({200})
    honour_headers: bool = False


@dataclass(slots=True)
class Lookup:
    """What the cache holds for one request: a ``fresh`` answer to use as it is, or what to ask
    the server to revalidate a stale one with (``validators``)."""

    prepared: requests.PreparedRequest
    actions: CacheActions
    fresh: CachedResponse | None = None
    stale: CachedResponse | None = None
    validators: Mapping[str, str] = field(default_factory=dict)


class HttpCache:
    """One crawl's cache file, shared by its worker threads (and processes: SQLite locks it)."""

    def __init__(self, path: Path, policy: CachePolicy, stats: Stats) -> None:
        self.path = path
        self.stats = stats
        self._settings = CacheSettings(
            expire_after=-1 if policy.expire_after is None else policy.expire_after,
            allowable_codes=tuple(sorted(policy.statuses)),
            allowable_methods=("GET", "HEAD"),
            cache_control=policy.honour_headers,
        )
        self._warned = threading.Event()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # The file's mode is set before SQLite opens it; its -wal and -shm files take it.
            os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
            os.chmod(path, 0o600)
            self._backend = SQLiteCache(path, serializer="json", wal=True, busy_timeout=30_000)
        except (OSError, sqlite3.Error) as error:
            raise HttpCacheError(str(path), str(error)) from None

    def look_up(self, prepared: requests.PreparedRequest) -> Lookup | None:
        """The cache's answer for ``prepared`` (None where it is not to be cached: a POST, say)."""
        try:
            key = self._backend.create_key(prepared)
            actions = CacheActions.from_request(key, prepared, self._settings)
            if actions.skip_read:
                return None
            cached = self._backend.get_response(key)
            actions.update_from_cached_response(cached)
        except (sqlite3.Error, ValueError, TypeError, KeyError) as error:
            self._failed("read", error)
            return None
        lookup = Lookup(prepared, actions)
        if cached is None:
            return lookup
        if actions.resend_request or actions.send_request:
            lookup.stale = cached
            lookup.validators = _validators(actions)
            return lookup
        lookup.fresh = cached
        return lookup

    def store(self, lookup: Lookup, response: Response) -> None:
        """Keep ``response``, the final answer to ``lookup``'s request, if the policy says so."""
        entry = CachedResponse(
            url=response.url,
            status_code=response.status,
            headers=CaseInsensitiveDict({k: v for k, v in response.headers.items() if k.title() not in _NOT_KEPT}),
            request=CachedRequest.from_request(lookup.prepared),
            reason=_reason(response.status),
        )
        entry._content = response.body
        actions = lookup.actions
        actions.update_from_response(entry)
        if actions.skip_write:
            return
        self._save(entry, actions)
        self.stats.inc("cache_stores")

    def revalidated(self, lookup: Lookup, not_modified: Response, request: Request) -> Response:
        """The stale entry, confirmed by the server's 304 and kept with its new expiry."""
        assert lookup.stale is not None
        answer = CachedResponse(
            url=not_modified.url,
            status_code=304,
            headers=CaseInsensitiveDict(
                {k: v for k, v in not_modified.headers.items() if k.title() not in _NOT_KEPT}
            ),
            request=CachedRequest.from_request(lookup.prepared),
        )
        actions = lookup.actions
        actions.update_from_response(answer)
        entry = actions.update_revalidated_response(answer, lookup.stale)
        if not actions.skip_write:
            self._save(entry, actions)
        self.stats.inc("cache_revalidated")
        return _response_of(entry, request)

    def answer(self, entry: CachedResponse, request: Request) -> Response:
        """A fresh entry, as the answer to ``request`` (a cache hit)."""
        self.stats.inc("cache_hits")
        return _response_of(entry, request)

    def _save(self, entry: CachedResponse, actions: CacheActions) -> None:
        try:
            self._backend.save_response(entry, actions.cache_key, actions.expires)
        except (sqlite3.Error, ValueError, TypeError) as error:
            self._failed("write", error)

    def _failed(self, what: str, error: Exception) -> None:
        # The cache only saves time: a damaged entry or a full disk makes the request go to the
        # site, counted and said once, instead of failing the crawl.
        self.stats.inc("cache_errors")
        if not self._warned.is_set():
            self._warned.set()
            logger.warning("%s: cannot %s the HTTP cache (%s); the site is asked instead (counted as cache_errors)",
                           self.path, what, error)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._backend.close()


def _response_of(entry: CachedResponse, request: Request) -> Response:
    """A cached answer as the spider sees a fetched one."""
    return Response(entry.url, entry.status_code, CaseInsensitiveDict(entry.headers), entry.content or b"", request)


def _validators(actions: CacheActions) -> dict[str, str]:
    """If-None-Match and If-Modified-Since, as requests-cache's policy would add them."""
    probe = requests.PreparedRequest()
    probe.headers = CaseInsensitiveDict()
    actions.update_request(probe)
    return dict(probe.headers)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
