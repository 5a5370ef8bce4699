"""One page at a time, through the crawl's real machinery, for ``crawler fetch``, ``shell`` and
``parse``: the spider's sessions, login and tokens from the config, robots.txt, its hooks, and
the retry policy, without a checkpoint or a crawl."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..admission import checked_request
from ..config import Config
from ..content import ContentTypes
from ..exceptions import CrawlerError, FetchError
from ..hooks import HookFailed
from ..http.fetcher import Redirected, UnwantedContent
from ..loader import load_spiders
from ..politeness.robots import RobotsDecision
from ..request import Request
from ..response import Response
from ..spider import Spider
from ..stats import Stats
from ..stopping import StopSignal
from .auth import environment
from .wiring import SpiderWork, retry_policy, spider_work

#: Any content type: ``crawler fetch`` shows what the server sent, whatever it is.
ANYTHING = ContentTypes(("*/*",))


class FetchSpider(Spider):
    """The spider of ``crawler fetch URL`` without a config: no login, no tokens."""

    name = "fetch"


@dataclass
class PageFetcher:
    """Fetches one URL after another as ``spider``'s requests are fetched in a crawl."""

    spider: Spider
    work: SpiderWork
    config: Config
    practice_site: str | None
    stats: Stats

    def fetch(self, url: str, *, accept: ContentTypes = ANYTHING) -> Response:
        """The response for ``url`` (``{practice_site}`` in it stands for the served site),
        after the redirects a crawl follows. Raises CrawlerError with one line for what a crawl
        would count as a failure: refused by robots.txt, or failed after its retries."""
        if self.practice_site is not None:
            url = url.replace("{practice_site}", self.practice_site)
        request = checked_request(Request(url), self.stats, self.spider.name)
        if request is None:
            raise CrawlerError(f"cannot fetch {url}: {', '.join(self.stats.snapshot()) or 'not a URL'}")
        for _ in range(self.config.http.max_redirects + 1):
            try:
                return self._with_retries(request, accept)
            except Redirected as redirect:  # to another origin: a crawl queues it; here it is followed
                request = redirect.request
        raise CrawlerError(f"{url}: more than {self.config.http.max_redirects} redirects")

    def _with_retries(self, request: Request, accept: ContentTypes) -> Response:
        robots = self.work.processor.robots
        if robots is not None:
            verdict = robots.check(request.url)
            if verdict.decision is RobotsDecision.DISALLOW:
                raise CrawlerError(f"robots.txt disallows {request.url} (-s robots.obey=false fetches it anyway)")
            if verdict.decision is RobotsDecision.UNAVAILABLE:
                raise CrawlerError(f"{request.url}: robots.txt is unavailable ({verdict.reason}), so nothing is fetched there")
        policy = retry_policy(self.config)
        hooks = self.work.processor.hooks
        attempts = 0
        while True:
            attempts += 1
            try:
                # The spider's and the config's hooks, as in the crawl: on every attempt, and
                # around the response its callback (or the shell) gets.
                sent = hooks.before_sending(request, self.spider)
                if sent is None:
                    raise CrawlerError(f"{request.url}: a request hook dropped it, so it is not fetched")
                response = hooks.before_callback(self.work.processor.fetcher.fetch(sent, accept), self.spider)
                if response is None:
                    raise CrawlerError(f"{request.url}: a response hook dropped its response")
                return response
            except HookFailed as failure:
                raise CrawlerError(f"{request.url}: {failure}") from None
            except UnwantedContent as unwanted:
                raise CrawlerError(f"{request.url}: a {unwanted.content_type} response, which the callback does not accept") from None
            except FetchError as error:
                wait = policy.retry_in(error, attempts)
                if wait is None:
                    raise CrawlerError(f"{request.url}: failed after {attempts} attempt(s): {error}") from None
                time.sleep(wait)


@contextlib.contextmanager
def page_fetcher(config: Config, spider: str | None = None) -> Iterator[PageFetcher]:
    """A ``PageFetcher`` for ``spider`` of the config (its first, by default), with the
    practice site served while it is open if the config serves it."""
    from . import _pool_sizing, _practice_site

    # Not for the checkpoint's crawl: the port it remembers stays as it was.
    with _practice_site(config, resuming=False, for_checkpoint=False) as site:
        demo_account = None
        if site is not None:
            config = config.with_practice_site(site.url)
            demo_account = site.demo_credentials
        index, chosen = next(iter(load_spiders(config, spider).items()))
        stats = Stats()
        work = spider_work(
            config, index, chosen, stats, StopSignal(), environment(config, demo_account), _pool_sizing(config, 1),
            _NoScheduler(),
        )
        try:
            yield PageFetcher(chosen, work, config, None if site is None else site.url, stats)
        finally:
            work.close()


class _NoScheduler:
    """What a response says about its host has no crawl to go to: one page is fetched at a time."""

    def pause(self, name: str, seconds: float) -> None:
        pass

    def set_crawl_delay(self, name: str, seconds: float | None) -> None:
        pass


def bare_config() -> Config:
    """The config of ``crawler fetch URL`` without one: the defaults, and a spider of no login."""
    from pathlib import Path

    return Config.with_base_dir({"spiders": [{"spider": f"{__name__}:FetchSpider"}]}, Path.cwd(), "crawler fetch")

