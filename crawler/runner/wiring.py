"""The processing side of one spider's crawl, made from the config: sessions, fetcher, login and
tokens, robots.txt, retry policy and rules, in a LeaseProcessor. The same in the process that
runs the crawl and in each worker process (where the login is the coordinator's, see
``crawler.workers``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests

from ..auth.cookies import CrawlCookieJar
from ..config import Config
from ..http.fetcher import Auth, Fetcher, Timeouts
from ..http.sessions import PoolSizing, SessionRegistry, SessionSettings, make_session_factory
from ..politeness.robots import RobotsCache, RobotsFetch
from ..processing import HostControl, LeaseProcessor
from ..retry import RetryPolicy
from ..rules import CrawlRules
from ..seen import SeenFilter
from ..spider import Spider
from ..stats import Stats
from ..stopping import StopSignal
from .auth import LoginVia, SpiderAuth, build_spider_auth

if TYPE_CHECKING:
    from ..http.cache import HttpCache


@dataclass
class SpiderWork:
    processor: LeaseProcessor
    sessions: SessionRegistry
    auth: SpiderAuth
    cache: HttpCache | None = None

    def close(self) -> None:
        self.sessions.close_all()
        if self.cache is not None:
            self.cache.close()


def spider_work(
    config: Config,
    index: int,
    spider: Spider,
    stats: Stats,
    stop: StopSignal,
    environ: Mapping[str, str],
    pools: PoolSizing,
    hosts: HostControl,
    *,
    seen: SeenFilter | None = None,
    login_via: LoginVia | None = None,
    robots_via: Callable[[RobotsFetch], RobotsFetch] | None = None,
) -> SpiderWork:
    """``login_via`` makes the login another's, and ``robots_via`` wraps the robots.txt fetch
    (a worker process's login is its coordinator's for the whole crawl, and it asks the
    coordinator before it fetches a robots.txt)."""
    new_session = session_factory(config, pools, stats)
    auth = build_spider_auth(config, index, spider, stats, environ, new_session, login_via=login_via)
    sessions = SessionRegistry(lambda: new_session(auth.cookies))
    cache = http_cache(config, stats)
    fetcher = _fetcher(config, sessions, stats, auth.auth, cache)
    entry = config.spiders[index]
    processor = LeaseProcessor(
        spider,
        fetcher,
        stats,
        stop,
        retry=retry_policy(config),
        hosts=hosts,
        rules=CrawlRules.build(
            spider.allowed_domains if entry.allowed_domains is None else entry.allowed_domains,
            entry.allow,
            entry.deny,
            entry.max_depth,
        ),
        robots=_robots(
            config, fetcher.fetch_robots if robots_via is None else robots_via(fetcher.fetch_robots), stats,
            counted=robots_via is None,
        ),
        seen=seen,
    )
    return SpiderWork(processor, sessions, auth, cache)


def retry_policy(config: Config) -> RetryPolicy:
    retry = config.retry
    return RetryPolicy(
        attempts=retry.attempts,
        backoff_initial=retry.backoff.initial,
        backoff_max=retry.backoff.max,
        jitter=retry.backoff.jitter,
        max_retry_after=retry.max_retry_after,
        statuses=retry.statuses,
    )


def _robots(config: Config, fetch: RobotsFetch, stats: Stats, *, counted: bool) -> RobotsCache | None:
    if not config.robots.obey:
        return None
    return RobotsCache(
        fetch,
        config.http.user_agent,
        stats,
        recheck_unavailable=config.robots.recheck_unavailable,
        max_crawl_delay=config.robots.max_crawl_delay,
        counts_fetches=counted,
    )


def http_cache(config: Config, stats: Stats) -> HttpCache | None:
    settings = config.http_cache
    if not settings.enabled:
        return None
    # Imported here: requests-cache takes a quarter of a second to import, which a crawl that
    # does not cache (and each of its worker processes) need not pay.
    from ..http.cache import CachePolicy, HttpCache

    policy = CachePolicy(
        expire_after=settings.expire_after,
        statuses=frozenset(settings.statuses),
        honour_headers=settings.honour_headers,
    )
    return HttpCache(config.resolve(settings.path), policy, stats)


def _fetcher(config: Config, sessions: SessionRegistry, stats: Stats, auth: Auth, cache: HttpCache | None) -> Fetcher:
    timeout = config.http.timeout
    return Fetcher(
        sessions,
        timeouts=Timeouts(timeout.connect, timeout.read, timeout.total),
        max_body_size=config.http.max_body_size,
        max_redirects=config.http.max_redirects,
        error_statuses=config.retry.statuses,
        stats=stats,
        auth=auth,
        cache=cache,
    )


def session_factory(config: Config, pools: PoolSizing, stats: Stats) -> Callable[[CrawlCookieJar], requests.Session]:
    ca_bundle = config.http.ca_bundle
    verify: bool | str = config.http.verify_tls
    if ca_bundle is not None and verify:
        verify = str(config.resolve(ca_bundle))
    settings = SessionSettings(
        user_agent=config.http.user_agent, max_redirects=config.http.max_redirects, verify=verify
    )
    return make_session_factory(settings, pools, stats)


