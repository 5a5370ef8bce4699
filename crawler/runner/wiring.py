"""The processing side of one spider's crawl, made from the config: sessions, fetcher, login and
tokens, robots.txt, retry policy, rules and hooks, in a LeaseProcessor. The same in the process
that runs the crawl and in each worker process (where the login is the coordinator's, see
``crawler.workers``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import requests

from ..auth.cookies import CrawlCookieJar
from ..config import Config
from ..exceptions import ConfigError
from ..http.fetcher import Auth, Fetcher, Timeouts
from ..http.proxies import (
    Backoff,
    DirectHosts,
    Proxy,
    ProxyAddress,
    ProxyRoutes,
    Rotation,
    environment_direct_hosts,
    environment_proxies,
)
from ..http.sessions import PoolSizing, SessionRegistry, SessionSettings, make_session_factory
from ..loader import configured_hooks
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
    routes = proxy_routes(config, environ, stats)
    new_session = session_factory(config, pools, stats, environ, routes)
    auth = build_spider_auth(config, index, spider, stats, environ, new_session, login_via=login_via)
    sessions = SessionRegistry(lambda: new_session(auth.cookies))
    cache = http_cache(config, stats)
    fetcher = _fetcher(config, sessions, stats, auth.auth, cache, routes)
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
        # Imported here, in each process that processes: callables never cross a pipe.
        hooks=configured_hooks(config, index, spider),
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


def _fetcher(
    config: Config, sessions: SessionRegistry, stats: Stats, auth: Auth, cache: HttpCache | None, routes: ProxyRoutes
) -> Fetcher:
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
        proxies=routes,
    )


def session_factory(
    config: Config, pools: PoolSizing, stats: Stats, environ: Mapping[str, str], routes: ProxyRoutes | None = None
) -> Callable[[CrawlCookieJar], requests.Session]:
    """Sessions as the config says, sending through ``routes`` (by default, the config's)."""
    ca_bundle = config.http.ca_bundle
    verify: bool | str = config.http.verify_tls
    if ca_bundle is not None and verify:
        verify = str(config.resolve(ca_bundle))
    elif verify and config.http.trust_env and (bundle := _environment_ca_bundle(environ)):
        verify = bundle
    settings = SessionSettings(
        user_agent=config.http.user_agent, max_redirects=config.http.max_redirects, verify=verify
    )
    return make_session_factory(settings, pools, stats, routes or proxy_routes(config, environ, stats))


def proxy_routes(config: Config, environ: Mapping[str, str], stats: Stats) -> ProxyRoutes:
    """The proxies of ``http.proxy`` (with the credentials its variables hold), or with
    ``http.trust_env`` those of the environment; ``http.no_proxy`` (and ``NO_PROXY``) go direct."""
    http = config.http
    by_scheme: dict[str, list[Proxy]] = {}
    direct = list(http.no_proxy)
    if http.proxy:
        credentials = _proxy_credentials(config, environ)
        proxies = [Proxy.at(ProxyAddress.parse(url), credentials) for url in http.proxy]
        by_scheme = {"http": proxies, "https": proxies}
    elif http.trust_env:
        try:
            by_scheme = environment_proxies(environ)
        except ValueError as error:
            raise ConfigError([f"{error} (http.trust_env)"]) from None
    if http.trust_env:
        direct += environment_direct_hosts(environ)
    return ProxyRoutes(
        by_scheme,
        rotation=Rotation(http.proxy_rotation),
        direct=DirectHosts(direct),
        stats=stats,
        max_failures=http.max_proxy_failures,
        backoff=Backoff(config.retry.backoff.initial, config.retry.backoff.max),
    )


def _proxy_credentials(config: Config, environ: Mapping[str, str]) -> tuple[str, str] | None:
    names = (config.http.proxy_username_env, config.http.proxy_password_env)
    username, password = (environ.get(name) for name in names)
    if username is None and password is None:
        return None
    if username is None or password is None:
        field, missing, other = ("username", *names) if username is None else ("password", *reversed(names))
        problem = f"environment variable {missing} is not set, though {other} is (set both, or neither)"
        raise ConfigError([f"http.proxy_{field}_env: {problem}"])
    return username, password


def _environment_ca_bundle(environ: Mapping[str, str]) -> str | None:
    """``REQUESTS_CA_BUNDLE`` or else ``CURL_CA_BUNDLE``, as requests reads them; checked now,
    where a missing file would otherwise fail every https request."""
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        if path := environ.get(name):
            if not os.path.isfile(path):
                raise ConfigError([f"{name} (http.trust_env): no such file: {path}"])
            return path
    return None


