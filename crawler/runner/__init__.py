"""Running the crawls a config describes: builds the sessions, fetcher and checkpoint, serves the
practice site if asked, handles Ctrl-C/SIGTERM, and closes everything at the end."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import resource
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, ContextManager, Protocol

import requests

from ..auth.cluster import ClusterLogin
from ..auth.cookies import CrawlCookieJar
from ..auth.login import Login, SharedLogin, SingleFlightLogin
from ..callbacks import missing_callbacks
from ..config import Config, SpiderConfig
from ..engine import COMMIT_GATHER, Crawl, CrawlResult, Engine
from ..exceptions import CheckpointError, CheckpointInUse, CheckpointWriteFailed, CrawlerError
from ..exporters import make_format
from ..frontier.base import Backend, FrontierCounts, Limits, ResumeInfo, Store
from ..frontier.sqlite import SQLiteBackend
from ..http.sessions import PoolSizing
from ..loader import load_spiders
from ..politeness.hosts import AdaptiveDelay, Delay, FixedDelay, HostLimits, HostScheduler
from ..spider import Spider
from ..stats import Stats
from ..stopping import StopSignal
from ..workers import Workers
from ..workers.processes import ProcessWorkers
from ..workers.threads import ThreadWorkers
from ..pipelines import Pipeline
from ..politeness.robots import RobotsFetch, SharedRobotsFetch
from ..processing import HostControl
from .auth import LoginVia, SpiderAuth, build_spider_auth, check_secrets, cookie_file, environment
from .child import ChildSpec, child_main
from .items import check_sinks, item_feed, load_pipelines
from .owner import machine_slot
from .wiring import SpiderWork, session_factory, spider_work

if TYPE_CHECKING:
    from ..practice import PracticeSite

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunReport:
    results: list[CrawlResult]
    stats: dict[str, int]
    elapsed: float
    interrupted: bool
    sessions: int
    requests_per_connection: float
    host_pools: int = 0  # hosts each worker's session keeps a connection to (see PoolSizing)

    @property
    def whole_crawl(self) -> FrontierCounts:
        """Every spider's crawl added up, as the checkpoint (and ``crawler status``) has it."""
        return _added(result.counts for result in self.results)

    @property
    def this_run(self) -> FrontierCounts:
        """What this run did: the whole crawl now, less what it was when the run began."""
        now, started = self.whole_crawl, _added(result.started for result in self.results)
        return FrontierCounts(**{name: getattr(now, name) - getattr(started, name) for name in _COUNT_NAMES})

    @property
    def failed_kinds(self) -> dict[str, int]:
        """The crawl's failed requests by error kind, every spider's added up."""
        return _summed(result.failed_kinds for result in self.results)

    @property
    def failed_statuses(self) -> dict[int, int]:
        """The crawl's requests failed by an HTTP status, by status, every spider's added up."""
        return _summed(result.failed_statuses for result in self.results)

    @property
    def reasons(self) -> dict[str, int]:
        """Counts by reason over every run, every spider's added up."""
        return _summed(result.reasons for result in self.results)

    @property
    def hosts(self) -> dict[str, dict[str, Any]]:
        """Every spider's per-host table in one: counts added up, the latest delay and pause."""
        merged: dict[str, dict[str, Any]] = {}
        for result in self.results:
            for host, row in result.hosts.items():
                if (seen := merged.get(host)) is None:
                    merged[host] = dict(row)
                else:
                    seen.update(row, requests=seen["requests"] + row["requests"], errors=seen["errors"] + row["errors"])
        return merged


_COUNT_NAMES = [count.name for count in fields(FrontierCounts)]


def _added(counts: Iterable[FrontierCounts]) -> FrontierCounts:
    return FrontierCounts(**_summed({name: getattr(one, name) for name in _COUNT_NAMES} for one in counts))


def _summed(counts: Iterable[Mapping[Any, int]]) -> dict[Any, int]:
    total: Counter[Any] = Counter()
    for one in counts:
        total.update(one)
    return dict(total)


class Reporter(Protocol):
    """What the run tells its user; the CLI shows it on the terminal, tests may ignore it."""

    def resuming(self, spider: str, info: ResumeInfo) -> None: ...

    def already_finished(self, spider: str, counts: FrontierCounts) -> None: ...

    def crawling(self, crawls: Sequence[Crawl]) -> ContextManager[object]: ...

    def stopping(self) -> None: ...


class QuietReporter:
    def resuming(self, spider: str, info: ResumeInfo) -> None:
        pass

    def already_finished(self, spider: str, counts: FrontierCounts) -> None:
        pass

    def crawling(self, crawls: Sequence[Crawl]) -> ContextManager[object]:
        return contextlib.nullcontext()

    def stopping(self) -> None:
        pass


def limits_of(entry: SpiderConfig) -> Limits:
    return Limits(entry.max_pages, entry.max_items)


def _host_limits(config: Config) -> HostLimits:
    polite = config.politeness
    rng = random.Random()

    def delay() -> Delay:
        if polite.adaptive:
            return AdaptiveDelay(
                polite.delay, polite.min_delay, polite.max_delay, polite.target_concurrency, polite.jitter, rng
            )
        return FixedDelay(polite.delay, polite.jitter, rng)

    return HostLimits(polite.concurrency, delay)


@contextlib.contextmanager
def _signals_stop(stop: StopSignal, reporter: Reporter) -> Iterator[None]:
    """Ctrl-C or SIGTERM once: stop gracefully. Twice: stop at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.graceful.is_set():
            stop.immediate.set()
            raise KeyboardInterrupt
        stop.request()
        reporter.stopping()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def backend_of(config: Config) -> Backend:
    """The checkpoint backend the config names, at the place it names."""
    settings = config.checkpoint
    match settings.backend:
        case "sqlite":
            return SQLiteBackend(config.resolve(settings.path))
        case "redis":
            from ..frontier.redis import HostPoliteness, RedisBackend  # redis-py only for crawls that use it

            assert settings.url is not None  # the config's validation requires it
            politeness = config.politeness
            return RedisBackend(
                settings.url,
                settings.crawl or config.base_dir.resolve().name,
                password=os.environ.get(settings.password_env) or None,
                wait_for_server=settings.wait_for_server,
                # Kept by every process together: the server spaces and counts each host's requests.
                politeness=HostPoliteness(politeness.concurrency, politeness.delay, settings.lease_time / 2),
            )


@contextlib.contextmanager
def open_checkpoint(config: Config, *, fresh: bool = False) -> Iterator[Store]:
    """The config's checkpoint, opened as this process's owner, and checked to belong to the
    config's spiders.

    With ``fresh``, a checkpoint that is not usable, or one written for other spiders, is
    replaced: that is the explicit way to start over. Without it, such a checkpoint is an error.
    """
    backend = backend_of(config)
    with contextlib.ExitStack() as stack:
        if config.checkpoint.backend == "sqlite":
            owner = f"{socket.gethostname()}:{os.getpid()}"  # its file lock says when it is gone
        else:
            owner = stack.enter_context(
                machine_slot(config.resolve(config.checkpoint.path).parent, config.checkpoint.machine)
            )
        store = stack.enter_context(_opened(backend, owner, config, fresh))
        yield store


def _opened(backend: Backend, owner: str, config: Config, fresh: bool) -> Store:
    lease_time = config.checkpoint.lease_time
    spider_set = [entry.spider for entry in config.spiders]
    try:
        store = backend.open(owner, lease_time=lease_time)
    except CheckpointInUse:
        raise
    except CheckpointError:
        if not fresh:
            raise
    else:
        try:
            store.claim_spider_set(spider_set)
            return store
        except CheckpointError:
            store.close()
            if not fresh:
                raise
    backend.discard()
    store = backend.open(owner, lease_time=lease_time)
    store.claim_spider_set(spider_set)
    return store


def _site_port_file(config: Config) -> Path:
    """Where the checkpoint keeps the port the practice site was served on for its crawl."""
    checkpoint = config.resolve(config.checkpoint.path)
    return checkpoint.with_name(f"{checkpoint.name}.practice-port")


def _remembered_port(path: Path) -> int | None:
    try:
        port = int(path.read_text(encoding="ascii"))
    except (OSError, ValueError):
        return None  # never served for this checkpoint (or not a port): any free one will do
    return port if 1 <= port <= 65535 else None


def _write_owner_only(path: Path, text: str) -> None:
    # Crawl state, like the checkpoint beside it: readable by its owner only.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        os.fchmod(descriptor, 0o600)
        file.write(text)


@contextlib.contextmanager
def _practice_site(config: Config, *, resuming: bool, for_checkpoint: bool = True) -> Iterator[PracticeSite | None]:
    """Serve the practice site if the config asks; yields it, or None.

    ``port = 0`` takes any free port, except when ``resuming`` a checkpoint's crawl: the URLs it
    holds name the port it was served on, so that one is taken again. Served ``for_checkpoint``,
    the port is written beside the checkpoint for the next run to take again.
    """
    settings = config.practice_site
    if not settings.serve:
        yield None
        return
    from ..practice import PracticeSite

    port_file = _site_port_file(config)
    # A resumed crawl's queued URLs name the port it was served on; with the HTTP cache on, a
    # fresh run is served there too where it can be, since the cache knows pages by their URLs.
    cached = config.http_cache.enabled
    remembered = _remembered_port(port_file) if (resuming or cached) and not settings.port else None
    site = PracticeSite(port=remembered or settings.port, products=settings.products, latency=settings.latency)
    try:
        try:
            site.start()
        except OSError:
            if resuming or not remembered:
                raise
            site = PracticeSite(port=0, products=settings.products, latency=settings.latency)
            site.start()
    except OSError as error:
        hint = ""
        if remembered:
            hint = ", the port this checkpoint's crawl was served on: free it, or start every spider over with --fresh"
        elif settings.port:
            hint = " (practice_site.port = 0 takes any free port)"
        raise CrawlerError(f"cannot serve the practice site on 127.0.0.1:{site.port}: {error.strerror}{hint}") from None
    try:
        try:
            if for_checkpoint:
                _write_owner_only(port_file, f"{site.port}\n")
        except OSError as error:
            raise CheckpointWriteFailed(f"cannot write {port_file}: {error.strerror}") from None
        logger.info("serving the practice site at %s", site.url)
        yield site
    finally:
        site.stop()


@dataclass
class _Run:
    """What every spider's crawl in one run shares."""

    config: Config
    checkpoint: Store
    stop: StopSignal
    reporter: Reporter
    environ: Mapping[str, str]
    pools: PoolSizing
    pipelines: Mapping[int, list[Pipeline]]  # each spider's, by its index in the config
    sessions_opened: int = 0
    stats: list[Stats] = field(default_factory=list)  # each spider's


def run_crawl(
    config: Config,
    *,
    only: str | None = None,
    fresh: bool = False,
    reporter: Reporter | None = None,
) -> RunReport:
    reporter = reporter or QuietReporter()
    # A wrong name, argument, pipeline or CSV column is reported before anything is opened or served.
    spiders = load_spiders(config, only)
    pipelines = {index: load_pipelines(config, index) for index in spiders}
    for spider in spiders.values():
        make_format(config.output, spider)
        for missing in missing_callbacks(type(spider)):
            logger.warning("%s: the requests that name it will fail", missing)
    started = time.monotonic()
    stop = StopSignal()
    with (
        open_checkpoint(config, fresh=fresh) as checkpoint,
        # With --fresh --spider, the other spiders' queued URLs still name the port served before.
        _practice_site(config, resuming=not (fresh and only is None)) as site,
        _signals_stop(stop, reporter),
    ):
        demo_account: Mapping[str, str] | None = None
        if site is not None:
            # The spiders, and the login and token URLs (the scopes of cookies and tokens), get
            # the port the site was served on.
            config = config.with_practice_site(site.url)
            demo_account = site.demo_credentials
            spiders = load_spiders(config, only)  # made again, with the URLs filled in
        run = _Run(
            config, checkpoint, stop, reporter, environment(config, demo_account), _pool_sizing(config), pipelines
        )
        check_secrets(config, run.environ)
        for index in spiders:
            check_sinks(config, index, run.environ)
        if fresh:
            # Every spider now, before crawling any: a --fresh run stopped half-way and resumed
            # without --fresh must not find a later spider's previous crawl still there.
            for spider in spiders.values():
                _forget(config, checkpoint, spider.name)
        results = _run_spiders(run, spiders)
    stats = Stats()
    for one in run.stats:
        stats.merge(one.snapshot())
    report = RunReport(
        results=results,
        stats=stats.snapshot(),
        elapsed=time.monotonic() - started,
        interrupted=stop.graceful.is_set(),
        sessions=run.sessions_opened,
        requests_per_connection=stats.requests_per_connection(),
        host_pools=run.pools.hosts,
    )
    if stop.error is not None:
        stop.error.report = report
        raise stop.error
    return report


def _pool_sizing(config: Config, workers: int | None = None) -> PoolSizing:
    """Pools for ``workers`` threads in one process (all the crawl's workers by default)."""
    workers = workers or config.crawl.workers
    open_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if open_files == resource.RLIM_INFINITY:
        open_files = config.http.max_host_pools * workers
    return PoolSizing.for_crawl(workers, config.http.max_host_pools, open_files)


def _forget(config: Config, checkpoint: Store, spider: str) -> None:
    """Start a spider's crawl over: its checkpoint rows, output file and saved login."""
    checkpoint.reset(spider)
    config.output_path(spider).unlink(missing_ok=True)
    cookie_file(config, spider).unlink(missing_ok=True)


def _run_spiders(run: _Run, spiders: Mapping[int, Spider]) -> list[CrawlResult]:
    """Every spider's crawl at once, sharing the workers and the per-host limits."""
    config = run.config
    shared = config.checkpoint.backend == "redis"
    scheduler = HostScheduler(
        _host_limits(config), hold_back_new_hosts=config.robots.obey,
        # A host's slots are the whole crawl's: hold no more leases than this process's workers.
        most_held=config.crawl.workers if shared else None,
    )
    hosts = run.checkpoint.host_control(scheduler)
    crawls: list[Crawl] = []
    auths: list[SpiderAuth] = []
    works: dict[str, SpiderWork] = {}
    workers: Workers | None = None
    with contextlib.ExitStack() as cleanup:
        for index, spider in spiders.items():
            stats = Stats()
            run.stats.append(stats)
            frontier = run.checkpoint.frontier(spider.name)
            output = cleanup.enter_context(
                contextlib.closing(item_feed(config, index, spider, frontier, stats, run.environ, pipelines=run.pipelines[index]))
            )
            crawl = Crawl(spider, frontier, output, stats, limits=limits_of(config.spiders[index]))
            crawls.append(crawl)
            login_via, robots_via = _shared_by_machines(run, spider.name, stats)
            if config.crawl.processes > 1:
                # The coordinator keeps the login (and its cookie file); worker processes fetch and parse.
                auth = build_spider_auth(
                    config, index, spider, stats, run.environ,
                    session_factory(config, run.pools, stats, run.environ), login_via=login_via,
                )
            else:
                work = works[spider.name] = spider_work(
                    config, index, spider, stats, run.stop, run.environ, run.pools, hosts, seen=crawl.seen,
                    login_via=login_via, robots_via=robots_via,
                )
                cleanup.callback(work.close)
                auth = work.auth
            auths.append(auth)
            # Sites rotate session cookies: keep the latest (the callback runs at the end).
            cleanup.callback(_save_login, auth)
            if frontier.resume.counts.done or frontier.resume.counts.queued:
                if crawl.is_finished():
                    run.reporter.already_finished(spider.name, frontier.counts())
                else:
                    run.reporter.resuming(spider.name, frontier.resume)
        workers = _workers(run, spiders, crawls, auths, scheduler, hosts, works, cleanup)
        engine = Engine(
            crawls,
            workers,
            scheduler=scheduler,
            concurrency=config.crawl.workers,
            shutdown_grace=config.crawl.shutdown_grace,
            stop=run.stop,
            lease_time=config.checkpoint.lease_time,
            # A shared checkpoint holds a host's slot from lease to commit: commit at once, so
            # that another lease (here or on another machine) can have it.
            commit_gather=0.0 if shared else COMMIT_GATHER,
        )
        try:
            with run.reporter.crawling(crawls):
                return engine.run()
        finally:
            run.sessions_opened += workers.sessions


def _workers(
    run: _Run,
    spiders: Mapping[int, Spider],
    crawls: list[Crawl],
    auths: list[SpiderAuth],
    scheduler: HostScheduler,
    hosts: HostControl,
    works: Mapping[str, SpiderWork],
    cleanup: contextlib.ExitStack,
) -> Workers:
    config = run.config
    if config.crawl.processes == 1:
        sessions = [work.sessions for work in works.values()]
        return ThreadWorkers(
            {name: work.processor for name, work in works.items()}, config.crawl.workers, run.stop,
            sessions=lambda: sum(len(registry) for registry in sessions),
        )
    # crawl.workers in all, shared as evenly as they go (and no process without a thread).
    processes = min(config.crawl.processes, config.crawl.workers)
    shares = [config.crawl.workers // processes + (number < config.crawl.workers % processes) for number in range(processes)]
    coordinator = Stats()  # what the coordinator itself does
    run.stats.append(coordinator)
    spec = ChildSpec(
        config, tuple(spiders), dict(run.environ), _pool_sizing(config, max(shares)),
        logging.getLogger("crawler").getEffectiveLevel(),
    )
    return ProcessWorkers(
        child_main, (spec,), shares, scheduler=scheduler, hosts=hosts,
        stats={crawl.name: crawl.stats for crawl in crawls}, stop=run.stop,
        logins={
            crawl.name: auth.auth.login
            for crawl, auth in zip(crawls, auths, strict=True)
            if isinstance(auth.auth.login, SingleFlightLogin)
        },
        seen={crawl.name: crawl.seen for crawl in crawls},
        # Each robots.txt fetched once for the whole crawl, not once per worker process.
        robots=SharedRobotsFetch() if config.robots.obey else None,
        counts=coordinator,
    )


@dataclass(frozen=True)
class Exported:
    """What ``export_outputs`` did for one spider: ``written`` items appended to ``path``, or
    nothing because a crawl process on this machine is writing that file (``busy``)."""

    spider: str
    path: Path
    written: int
    busy: bool = False


def export_outputs(config: Config, only: str | None = None) -> list[Exported]:
    """Bring each spider's output file up to date with the checkpoint's committed items, on
    this machine (a file deleted or cut short is written again from the start)."""
    spiders = load_spiders(config, only)
    results = []
    with open_checkpoint(config) as checkpoint:
        for index, spider in spiders.items():
            frontier = checkpoint.frontier(spider.name)
            # The file as the crawl writes it (through the pipelines); the sinks are the crawl's.
            feed = item_feed(
                config, index, spider, frontier, Stats(), os.environ, pipelines=load_pipelines(config, index), sinks=False
            )
            with contextlib.closing(feed) as output:
                written = output.sync()
                results.append(Exported(spider.name, output.path, written, busy=not output.writing))
    return results


def _shared_by_machines(
    run: _Run, spider: str, stats: Stats
) -> tuple[LoginVia | None, Callable[[RobotsFetch], RobotsFetch] | None]:
    """On a checkpoint every machine of the crawl shares (Redis): the spider's login, made once
    for all of them and kept there with its cookies, and one fetch of each robots.txt."""
    if run.config.checkpoint.backend != "redis":
        return None, None
    from ..frontier.redis_shared import login_board, robots_fetch

    store = run.checkpoint

    def login_via(login: Login, jar: CrawlCookieJar, new_session: Callable[[], requests.Session]) -> SharedLogin:
        board = login_board(store, spider)  # type: ignore[arg-type] - a RedisStore, as the config says
        return ClusterLogin(login, stats, board=board, cookies=jar, new_session=new_session, holder=store.owner)

    return login_via, lambda fetch: robots_fetch(store, fetch, stats)  # type: ignore[arg-type]


def _save_login(auth: SpiderAuth) -> None:
    if auth.auth.login is not None and auth.auth.login.generation:
        auth.save_cookies()
