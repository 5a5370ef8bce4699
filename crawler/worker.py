"""What a worker thread does with one leased request: fetch it, run its callback, sort the output.

Workers never touch the frontier: they hand a Completion back to the engine, which commits
completions in batches from its own thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import urljoin, urlsplit

from pydantic import BaseModel

from .exceptions import CrawlInterrupted, LoginFailed
from .frontier.base import Completion, Lease, Pending
from .http.fetcher import Fetcher
from .items import ItemValidator, RejectedItem
from .request import Request
from .response import Response
from .spider import Spider
from .stats import Stats
from .stopping import StopSignal

logger = logging.getLogger(__name__)

FETCHABLE_SCHEMES = frozenset({"http", "https"})


class LeaseProcessor:
    """Turns a lease into a Completion for one spider. Safe to share between worker threads."""

    def __init__(self, spider: Spider, fetcher: Fetcher, stats: Stats, stop: StopSignal) -> None:
        self.spider = spider
        self.fetcher = fetcher
        self.stats = stats
        self.stop = stop
        self.validator = ItemValidator(spider.item_model)

    def process(self, lease: Lease) -> Completion | None:
        """The lease's outcome, or None if the crawl is stopping and the lease should go back."""
        request = lease.request
        try:
            outcome = self.fetcher.fetch(request)
        except CrawlInterrupted:
            return None
        except LoginFailed as error:
            # Every request would fail the same way: stop the crawl, keep this one queued.
            self.stop.fail(error)
            return None
        if outcome.error is not None:
            self.stats.inc("failed")
            logger.warning("failed %s after %d attempt(s): %s", request.url, outcome.attempts, outcome.error)
            return Completion(lease, outcome.attempts, str(outcome.error), type(outcome.error).__name__)
        response = outcome.response
        assert response is not None
        if response.status >= 400 and response.status not in self.spider.handle_statuses:
            self.stats.inc("failed")
            logger.warning("failed %s: HTTP %d", request.url, response.status)
            return Completion(lease, outcome.attempts, f"HTTP {response.status}", "HTTPStatusError")
        self.stats.inc("pages")
        return self._run_callback(lease, response, outcome.attempts)

    def _run_callback(self, lease: Lease, response: Response, attempts: int) -> Completion:
        name = lease.request.callback or "parse"
        callback = getattr(self.spider, name, None)
        if not callable(callback):
            self.stats.inc("callback_errors")
            logger.error("spider %r has no callback %r (for %s)", self.spider.name, name, response.url)
            return Completion(lease, attempts, f"no callback {name!r}", "CallbackError")
        children: list[Pending] = []
        items: list[str] = []
        rejected: list[RejectedItem] = []
        try:
            for output in callback(response) or ():
                if isinstance(output, Request):
                    if child := checked_request(output, self.stats, base_url=response.url):
                        children.append(Pending(child, lease.depth + 1))
                elif isinstance(output, (BaseModel, dict)):
                    checked = self.validator.check(output, response.url)
                    if isinstance(checked, RejectedItem):
                        rejected.append(checked)
                        logger.info("rejected an item from %s: %s", response.url, checked.error)
                    else:
                        items.append(checked)
                else:
                    self.stats.inc("dropped:unsupported_output")
                    logger.warning(
                        "%s.%s yielded a %s for %s; expected a Request, a dict or a model",
                        self.spider.name, name, type(output).__name__, response.url,
                    )
        except BaseException as error:  # noqa: BLE001 - sys.exit() in a callback must not kill the worker
            # Output yielded before the error is dropped with it: a page's results are committed
            # whole or not at all, so a later retry of the failed page cannot duplicate them.
            # (KeyboardInterrupt is only ever raised in the main thread, never here.)
            self.stats.inc("callback_errors")
            logger.error("callback %s raised for %s", name, response.url, exc_info=True)
            return Completion(lease, attempts, f"callback error: {type(error).__name__}: {error}", "CallbackError")
        self.stats.inc("items", len(items))
        self.stats.inc("rejected_items", len(rejected))
        return Completion(lease, attempts, children=children, items=items, rejected=rejected)


def checked_request(request: Request, stats: Stats, base_url: str | None = None) -> Request | None:
    """Resolve a relative URL, and drop (counting why) what can never be fetched or stored."""
    url = request.url.strip()
    scheme = urlsplit(url).scheme.lower()
    if base_url is not None and not scheme:  # response.follow() already made it absolute
        url = urljoin(base_url, url)
        scheme = urlsplit(url).scheme.lower()
    if scheme not in FETCHABLE_SCHEMES:
        stats.inc(f"dropped:scheme:{scheme or 'none'}")
        return None
    if request.meta:
        try:
            json.dumps(request.meta)
        except (TypeError, ValueError):
            stats.inc("dropped:meta_not_json")
            logger.warning("dropped a request for %s: its meta is not JSON-serializable", url)
            return None
    return request if url == request.url else request.replace(url=url)


def checked_requests(requests: Iterable[Any], stats: Stats) -> Iterable[Request]:
    for request in requests:
        if not isinstance(request, Request):
            stats.inc("dropped:unsupported_output")
            logger.warning("start_requests yielded a %s; expected a Request", type(request).__name__)
        elif (checked := checked_request(request, stats)) is not None:
            yield checked
