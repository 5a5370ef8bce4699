"""What a worker process runs (see ``crawler.workers.processes``): the spiders' processing, made
from the same config as the coordinator's, with the coordinator's logins and host scheduler."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection

from ..config import Config
from ..exceptions import CrawlerError
from ..http.sessions import PoolSizing
from ..loader import load_spiders
from ..stats import Stats
from ..stopping import StopSignal
from ..politeness.robots import RobotsFetch
from ..workers.child import ChildLink, RemoteHosts, RemoteLogin, prepare_child, remote_robots, serve_coordinator
from .wiring import SpiderWork, spider_work


@dataclass(frozen=True)
class ChildSpec:
    """What a worker process is started with (pickled to it): the config as the coordinator
    runs it (the practice site's URL filled in), which spiders (by their index in the config),
    where credentials come from, and how its threads' connection pools are sized."""

    config: Config
    spiders: tuple[int, ...]
    environ: Mapping[str, str]
    pools: PoolSizing
    log_level: int


def child_main(connection: Connection, threads: int, spec: ChildSpec) -> None:
    link = prepare_child(connection, spec.log_level)
    stop = StopSignal()
    hosts = RemoteHosts(link)
    works: dict[str, SpiderWork] = {}
    try:
        spiders = load_spiders(spec.config)
        robots_via = _robots_via(spec.config, link)
        for index in spec.spiders:
            spider, stats = spiders[index], Stats()
            works[spider.name] = spider_work(
                spec.config, index, spider, stats, stop, spec.environ, spec.pools, hosts,
                login_via=lambda login, jar, _, name=spider.name, stats=stats: RemoteLogin(name, login, jar, link, stats),
                robots_via=lambda fetch, stats=stats: robots_via(fetch, stats),
            )
    except CrawlerError as error:
        link.send(("failed", error))
        return
    except Exception as error:  # noqa: BLE001 - told to the coordinator, which stops the crawl with it
        link.send(("failed", CrawlerError(f"a worker process could not start: {type(error).__name__}: {error}")))
        return
    try:
        serve_coordinator(
            link, {name: work.processor for name, work in works.items()}, threads, stop,
            lambda: sum(len(work.sessions) for work in works.values()),
        )
    finally:
        for work in works.values():
            work.close()


def _robots_via(config: Config, link: ChildLink) -> Callable[[RobotsFetch, Stats], RobotsFetch]:
    """How a worker process fetches a robots.txt once for the crawl: through its coordinator,
    or, on a checkpoint every machine shares (Redis), through the server, which makes it once
    for every process of every machine."""
    if config.checkpoint.backend != "redis":
        return lambda fetch, stats: remote_robots(link, fetch, stats)
    from ..frontier.redis_shared import RedisRobotsFetch
    from . import backend_of

    backend = backend_of(config)
    client = backend.connect()  # type: ignore[attr-defined] - a RedisBackend, as the config says
    return lambda fetch, stats: RedisRobotsFetch(client, backend.keys.crawl, fetch, stats)  # type: ignore[attr-defined]
