"""What a worker process runs (see ``crawler.workers.processes``): the spider's processing, made
from the same config as the coordinator's, with the coordinator's login and host scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection

from ..config import Config
from ..exceptions import CrawlerError
from ..http.sessions import PoolSizing
from ..loader import load_spiders
from ..stats import Stats
from ..stopping import StopSignal
from ..workers.processes import RemoteHosts, RemoteLogin, prepare_child, serve_coordinator
from .wiring import spider_work


@dataclass(frozen=True)
class ChildSpec:
    """What a worker process is started with (pickled to it): the config as the coordinator
    runs it (the practice site's URL filled in), which spider, where credentials come from, and
    how many threads it runs."""

    config: Config
    index: int
    spider: str
    environ: Mapping[str, str]
    threads: int
    pools: PoolSizing
    log_level: int


def child_main(connection: Connection, spec: ChildSpec) -> None:
    link = prepare_child(connection, spec.log_level)
    stats, stop = Stats(), StopSignal()
    try:
        spider = load_spiders(spec.config, spec.spider)[spec.index]
        work = spider_work(
            spec.config, spec.index, spider, stats, stop, spec.environ, spec.pools, RemoteHosts(link),
            login_via=lambda login, jar: RemoteLogin(login, jar, link, stats),
        )
    except CrawlerError as error:
        link.send(("failed", error))
        return
    except Exception as error:  # noqa: BLE001 - told to the coordinator, which stops the crawl with it
        link.send(("failed", CrawlerError(f"a worker process could not start: {type(error).__name__}: {error}")))
        return
    try:
        serve_coordinator(link, work.processor, spec.threads, stats, stop, lambda: len(work.sessions))
    finally:
        work.close()
