"""What a worker does with one leased request: robots.txt, request hooks, fetch, retry decision,
response hooks, callback, sorting the output; an ``Outcome`` for the engine.

Workers never touch the frontier or the host scheduler's slots: the outcome goes back to the
engine, which gives the host its slot back and commits completions in batches from its own
thread. What the processing learns about a host (a pause, a Crawl-delay) goes to ``HostControl``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

from .admission import checked_request
from .content import accepted_by
from .exceptions import FetchError, HTTPStatusError, LoginFailed, ProxyError, RobotsUnavailable
from .frontier.base import Completion, Entry, Lease
from .hooks import HookFailed, Hooks
from .http.fetcher import Fetcher, Redirected, UnwantedContent
from .items import ItemValidator, RejectedItem
from .politeness.robots import RobotsCache, RobotsDecision
from .request import Request, fingerprint
from .response import Response
from .retry import RetryPolicy
from .rules import CrawlRules
from .seen import SeenFilter
from .spider import Spider
from .stats import Once, Stats
from .stopping import StopSignal

logger = logging.getLogger(__name__)

# A host that answers these with Retry-After is asking for a pause, not just a later retry.
_PAUSING_STATUSES = frozenset({429, 503})


class HostControl(Protocol):
    """Where what a response says about its host goes: the crawl's host scheduler, or, in a
    worker process, the coordinator that owns it."""

    def pause(self, name: str, seconds: float) -> None: ...

    def set_crawl_delay(self, name: str, seconds: float | None) -> None: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a lease: its ``completion`` (None: give it back, the crawl is stopping),
    and for the host scheduler how long its response took (None: nothing was sent) and whether
    it was a success."""

    completion: Completion | None
    latency: float | None = None
    ok: bool = True


class LeaseProcessor:
    """Turns a lease into an Outcome for one spider. Safe to share between worker threads.

    ``seen``, where given, holds fingerprints the checkpoint has committed: links to them are
    dropped here, before their stored form is made (most links a page yields were seen before).
    """

    def __init__(
        self,
        spider: Spider,
        fetcher: Fetcher,
        stats: Stats,
        stop: StopSignal,
        *,
        retry: RetryPolicy,
        hosts: HostControl,
        rules: CrawlRules = CrawlRules(),
        robots: RobotsCache | None = None,
        seen: SeenFilter | None = None,
        hooks: Hooks = Hooks(),
    ) -> None:
        self.spider = spider
        self.fetcher = fetcher
        self.stats = stats
        self.stop = stop
        self.retry = retry
        self.hosts = hosts
        self.rules = rules
        self.robots = robots
        self.seen = seen
        self.hooks = hooks
        # A redirect target is the server's answer for a request already in the crawl: only
        # where it may go is checked, not the link patterns or depth that chose the request.
        self.redirect_rules = CrawlRules(allowed_domains=rules.allowed_domains)
        self.validator = ItemValidator(spider.item_model)
        self._first_too_deep = Once()
        spider.crawl_stats = stats  # what its built-in callbacks (parse_sitemap) count goes in the summary

    def process(self, lease: Lease) -> Outcome:
        sent = _Sent()
        completion = self._process(lease, sent)
        return Outcome(completion, sent.latency, sent.ok)

    def _process(self, lease: Lease, sent: _Sent) -> Completion | None:
        if self.robots is not None and (refused := self._check_robots(lease)) is not None:
            return refused
        # Every attempt starts from the request as leased: what the hooks make of it is sent,
        # never stored, so it cannot build up over retries.
        try:
            request = self.hooks.before_sending(lease.request, self.spider)
        except HookFailed as failure:
            return self._fail(lease, 0, str(failure), "HookError", "hook_errors", traceback=True)
        if request is None:
            self.stats.inc("skipped:request_hook")
            return Completion(lease, 0)
        name = request.callback or "parse"
        callback = getattr(self.spider, name, None)
        if not callable(callback):
            return self._fail(lease, 0, f"spider {self.spider.name} has no callback {name!r}", "CallbackError", "callback_errors")
        started = time.monotonic()
        try:
            response = self.fetcher.fetch(request, accepted_by(callback), self._may_follow)
        except Redirected as redirect:
            sent.record(time.monotonic() - started, ok=True)
            return self._queue_redirect(lease, _as_leased(lease.request, request, redirect.request))
        except UnwantedContent as unwanted:
            sent.record(time.monotonic() - started, ok=True)
            self.stats.inc("skipped:content_type")
            logger.info("skipped %s: %s for %s.%s", request.url, unwanted, self.spider.name, name)
            return Completion(lease, 1)
        except LoginFailed as error:
            # Every request would fail the same way: stop the crawl, keep this one queued.
            self.stop.fail(error)
            return None
        except ProxyError as error:
            return self._proxy_failed(lease, error)
        except FetchError as error:
            sent.record(time.monotonic() - started, ok=False)
            return self._retry_or_fail(lease, error)
        sent.record(time.monotonic() - started, ok=response.status < 400)
        if response.status >= 400 and response.status not in self.spider.handle_statuses:
            return self._fail(lease, 1, f"HTTP {response.status}", "HTTPStatusError", status=response.status)
        self.stats.inc("pages")
        try:
            hooked = self.hooks.before_callback(response, self.spider)
        except HookFailed as failure:
            return self._fail(lease, 1, str(failure), "HookError", "hook_errors", traceback=True)
        if hooked is None:
            self.stats.inc("skipped:response_hook")
            return Completion(lease, 1)
        return self._run_callback(lease, callback, hooked)

    def _may_follow(self, url: str) -> bool:
        """Whether the fetch may follow a redirect (within the origin) to ``url`` by itself."""
        return self.robots is None or self.robots.check(url).decision is RobotsDecision.ALLOW

    def _queue_redirect(self, lease: Lease, target: Request) -> Completion:
        """A redirect to another origin (or to a path robots.txt may refuse) goes through the
        frontier as a request of its own: dedupe, that origin's robots.txt, allowed_domains and
        per-host limits apply to it as to any request. It keeps its page's depth."""
        child = checked_request(target, self.stats, self.spider.name, rules=self.redirect_rules, depth=lease.depth)
        if child is None:
            logger.info("not following the redirect from %s to %s", lease.request.url, target.url)
            return Completion(lease, 1)
        self.stats.inc("redirects:requeued")
        return Completion(lease, 1, children=self._unseen([child], lease.depth))

    def _check_robots(self, lease: Lease) -> Completion | None:
        assert self.robots is not None
        verdict = self.robots.check(lease.request.url)
        if verdict.decision is not RobotsDecision.UNAVAILABLE:
            self.hosts.set_crawl_delay(lease.host, verdict.crawl_delay)
        if verdict.decision is RobotsDecision.DISALLOW:
            self.stats.inc("refused:robots")
            logger.info("refused by robots.txt: %s", lease.request.url)
            return Completion(lease, 0, "disallowed by robots.txt", "RobotsDisallowed", refused=True)
        if verdict.decision is RobotsDecision.UNAVAILABLE:
            error = RobotsUnavailable(f"robots.txt unavailable ({verdict.reason})", lease.request)
            return self._retry_or_fail(lease, error)
        return None

    def _retry_or_fail(self, lease: Lease, error: FetchError) -> Completion:
        """Try again later (the policy says when), or record the request as failed."""
        attempts = lease.attempts + 1
        wait = self.retry.retry_in(error, attempts)
        if isinstance(error, HTTPStatusError) and error.status in _PAUSING_STATUSES:
            self._pause_host(lease, error, wait)
        if wait is None:
            status = error.status if isinstance(error, HTTPStatusError) else None
            return self._fail(lease, 1, str(error), type(error).__name__, status=status)
        self.stats.inc("retries")
        logger.debug("retrying %s in %.2fs after attempt %d: %s", lease.request.url, wait, attempts, error)
        return Completion(lease, 1, str(error), type(error).__name__, retry_at=time.time() + wait)

    def _proxy_failed(self, lease: Lease, error: ProxyError) -> Completion:
        """Its proxies failed it: nothing reached the origin, so neither the host (no latency,
        no failed attempt) nor the request's attempts are charged (crawlee-python#943). It waits
        for a proxy in the queue, or fails once it met too many proxy failures."""
        if error.retry_in is None:
            return self._fail(lease, 0, str(error), type(error).__name__)
        self.stats.inc("proxy_waits")
        logger.debug("%s waits %.2fs for a proxy: %s", lease.request.url, error.retry_in, error)
        return Completion(lease, 0, str(error), type(error).__name__, retry_at=time.time() + error.retry_in)

    def _pause_host(self, lease: Lease, error: HTTPStatusError, wait: float | None) -> None:
        # A 429 is about the host, not the page; so is a 503 that says how long to stay away.
        if error.retry_after is not None:
            seconds = min(error.retry_after, self.retry.max_retry_after)
        elif error.status == 429 and wait is not None:
            seconds = wait
        else:
            return
        self.hosts.pause(lease.host, seconds)
        self.stats.inc("host_pauses")
        logger.info("pausing %s for %.1fs: it answered HTTP %d", lease.host, seconds, error.status)

    def _fail(
        self,
        lease: Lease,
        tries: int,
        error: str,
        kind: str,
        counter: str | None = None,
        *,
        traceback: bool = False,
        status: int | None = None,
    ) -> Completion:
        """Record the request as failed after ``tries`` more attempts (earlier ones counted too).

        One warning line; with ``traceback`` (called while handling the spider's exception) its
        traceback follows at INFO, so ``-v`` shows it and a normal run stays one line per failure.
        A failure by HTTP ``status`` is also counted by it: a 404 and a 503 ask different things.
        """
        self.stats.inc("failed")
        self.stats.inc(f"failed:{kind}")
        if status is not None:
            self.stats.inc(f"status:{status}")
        if counter:
            self.stats.inc(counter)
        if attempts := lease.attempts + tries:
            logger.warning("failed %s after %d attempt(s): %s", lease.request.url, attempts, error)
        else:
            logger.warning("failed %s (not sent): %s", lease.request.url, error)
        if traceback:
            logger.info("where %s failed:", lease.request.url, exc_info=True)
        return Completion(lease, tries, error, kind, status=status)

    def _run_callback(self, lease: Lease, callback: Callable[..., Any], response: Response) -> Completion:
        name = callback.__name__
        children: list[Request] = []
        items: list[str] = []
        rejected: list[RejectedItem] = []
        depth = lease.depth + 1
        try:
            for output in callback(response) or ():
                if isinstance(output, Request):
                    if child := checked_request(
                        output, self.stats, self.spider.name, base_url=response.url, rules=self.rules, depth=depth
                    ):
                        children.append(child)
                elif isinstance(output, (BaseModel, dict)):
                    checked = self.validator.check(output, response.url)
                    if isinstance(checked, RejectedItem):
                        rejected.append(checked)
                        logger.info("rejected an item from %s: %s", response.url, checked.error)
                    else:
                        items.append(checked)
                else:
                    self.stats.inc("malformed:output")
                    logger.warning(
                        "%s.%s yielded a %s for %s; expected a Request, a dict or a model",
                        self.spider.name, name, type(output).__name__, response.url,
                    )
        except BaseException as error:  # noqa: BLE001 - sys.exit() in a callback must not kill the worker
            # Output yielded before the error is dropped with it: a page's results are committed
            # whole or not at all, so a later retry of the failed page cannot duplicate them.
            # (KeyboardInterrupt is only ever raised in the main thread, never here.)
            return self._fail(
                lease, 1, f"callback {self.spider.name}.{name} raised {type(error).__name__}: {error}", "CallbackError",
                "callback_errors", traceback=True,
            )
        if response.undecodable:
            self.stats.inc("malformed:encoding")
            logger.warning("%s has bytes that are not valid %s; they were replaced", response.url, response.encoding)
        if response.truncated_by_depth:
            self.stats.inc("malformed:too_deep")
            # A site that nests this deep tends to do it on every page: one line says what
            # happens, the count says how often.
            if self._first_too_deep():
                logger.warning(
                    "%s nests elements deeper than the HTML parser goes (about 2,048 levels): it was "
                    "parsed down to there only, and what lay deeper, and everything after it, is lost. "
                    "Pages like it are counted as malformed:too_deep in the stats (this is said once)",
                    response.url,
                )
        self.stats.inc("items", len(items))
        self.stats.inc("rejected_items", len(rejected))
        return Completion(lease, 1, children=self._unseen(children, depth), items=items, rejected=rejected)

    def _unseen(self, requests: list[Request], depth: int) -> list[Entry]:
        """The stored form of the requests the checkpoint has not committed as seen already."""
        spider = self.spider.name
        if self.seen is None:
            return [Entry.of(spider, request, depth) for request in requests]
        seen = self.seen
        return [Entry.of(spider, request, depth) for request in requests if fingerprint(spider, request) not in seen]


def _as_leased(leased: Request, sent: Request, target: Request) -> Request:
    """The redirect ``target`` of ``sent`` (the ``leased`` request as the hooks left it), made
    from the leased request instead: the hooks' changes are never stored, and the hooks see the
    new request afresh when it is leased. What the redirect changed stays: the URL, a method
    made GET without its body, the headers left out for another origin."""
    if sent is leased:
        return target
    if target.method != sent.method:
        method, body = target.method, None
    else:
        method, body = leased.method, None if target.body is None else leased.body
    kept = {name.lower() for name in target.headers or {}}
    headers = {name: value for name, value in (leased.headers or {}).items() if name.lower() in kept}
    return leased.replace(
        url=target.url, method=method, body=body, headers=headers or None,
        redirects=target.redirects, redirected_from=target.redirected_from,
    )


class _Sent:
    """What the scheduler learns from one lease: how long its response took, and whether it
    was a success (no latency: nothing was sent)."""

    __slots__ = ("latency", "ok")

    def __init__(self) -> None:
        self.latency: float | None = None
        self.ok = True

    def record(self, latency: float, ok: bool) -> None:
        self.latency, self.ok = latency, ok
