"""Running the crawls a config describes: builds the sessions, fetcher and checkpoint, serves the
practice site if asked, handles Ctrl-C/SIGTERM, and closes everything at the end."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import ContextManager, Protocol
from urllib.parse import urlsplit

from .config import Config
from .engine import Crawl, CrawlResult, StopSignal
from .exceptions import CheckpointError, CrawlerError
from .exporters import OutputFile, make_format
from .frontier.base import FrontierCounts, ResumeInfo
from .frontier.sqlite import Checkpoint, delete_checkpoint
from .http.fetcher import Fetcher
from .http.sessions import PoolSizing, SessionRegistry, SessionSettings, make_session_factory
from .loader import load_spiders
from .retry import RetryPolicy
from .spider import Spider
from .stats import Stats
from .worker import LeaseProcessor

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunReport:
    results: list[CrawlResult]
    stats: dict[str, int]
    elapsed: float
    interrupted: bool
    sessions: int
    requests_per_connection: float


class Reporter(Protocol):
    """What the run tells its user; the CLI shows it on the terminal, tests may ignore it."""

    def resuming(self, spider: str, info: ResumeInfo) -> None: ...

    def already_finished(self, spider: str, counts: FrontierCounts) -> None: ...

    def crawling(self, crawl: Crawl, stats: Stats) -> ContextManager[object]: ...

    def stopping(self) -> None: ...


class QuietReporter:
    def resuming(self, spider: str, info: ResumeInfo) -> None:
        pass

    def already_finished(self, spider: str, counts: FrontierCounts) -> None:
        pass

    def crawling(self, crawl: Crawl, stats: Stats) -> ContextManager[object]:
        return contextlib.nullcontext()

    def stopping(self) -> None:
        pass


def _retry_policy(config: Config) -> RetryPolicy:
    retry = config.retry
    return RetryPolicy(
        attempts=retry.attempts,
        backoff_initial=retry.backoff.initial,
        backoff_max=retry.backoff.max,
        jitter=retry.backoff.jitter,
        max_retry_after=retry.max_retry_after,
        statuses=retry.statuses,
    )


def _known_hosts(spiders: list[Spider]) -> int:
    hosts = {urlsplit(url).netloc for spider in spiders for url in spider.start_urls}
    return len(hosts)


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


def _open_checkpoint(config: Config, fresh: bool) -> Checkpoint:
    path = config.resolve(config.checkpoint.path)
    owner = f"{socket.gethostname()}:{os.getpid()}"
    try:
        return Checkpoint(path, owner)
    except CheckpointError as error:
        if not fresh or "in use" in str(error):
            raise
    delete_checkpoint(path)  # --fresh over a file that is not a usable checkpoint
    return Checkpoint(path, owner)


@contextlib.contextmanager
def _practice_site(config: Config) -> Iterator[None]:
    settings = config.practice_site
    if not settings.serve:
        yield
        return
    from .practice import PracticeSite

    site = PracticeSite(port=settings.port, products=settings.products, latency=settings.latency)
    try:
        site.start()
    except OSError as error:
        raise CrawlerError(
            f"cannot serve the practice site on 127.0.0.1:{settings.port}: {error.strerror}"
        ) from None
    try:
        yield
    finally:
        site.stop()


def run_crawl(
    config: Config,
    *,
    only: str | None = None,
    fresh: bool = False,
    reporter: Reporter | None = None,
) -> RunReport:
    reporter = reporter or QuietReporter()
    spiders = load_spiders(config, only)
    stats = Stats()
    stop = StopSignal()
    sessions = SessionRegistry(
        make_session_factory(
            SessionSettings(
                user_agent=config.http.user_agent,
                max_redirects=config.http.max_redirects,
                verify=str(config.resolve(config.http.ca_bundle))
                if config.http.ca_bundle and config.http.verify_tls
                else config.http.verify_tls,
            ),
            PoolSizing.for_load(_known_hosts(spiders)),
            stats,
        )
    )
    fetcher = Fetcher(
        sessions,
        timeout=(config.http.timeout.connect, config.http.timeout.read),
        max_body_size=config.http.max_body_size,
        policy=_retry_policy(config),
        stop=stop.graceful,
        stats=stats,
    )
    results: list[CrawlResult] = []
    try:
        with _open_checkpoint(config, fresh) as checkpoint, _practice_site(config), _signals_stop(stop, reporter):
            for spider in spiders:
                if stop.graceful.is_set():
                    break
                results.append(_run_spider(config, checkpoint, spider, fetcher, stats, stop, reporter, fresh))
    finally:
        session_count = len(sessions)
        sessions.close_all()
    return RunReport(
        results=results,
        stats=stats.snapshot(),
        elapsed=stats.elapsed,
        interrupted=stop.graceful.is_set(),
        sessions=session_count,
        requests_per_connection=stats.requests_per_connection(),
    )


def _run_spider(
    config: Config,
    checkpoint: Checkpoint,
    spider: Spider,
    fetcher: Fetcher,
    stats: Stats,
    stop: StopSignal,
    reporter: Reporter,
    fresh: bool,
) -> CrawlResult:
    output_path = config.output_path(spider.name)
    if fresh:
        checkpoint.reset(spider.name)
        output_path.unlink(missing_ok=True)
    frontier = checkpoint.frontier(spider.name)
    output = OutputFile(output_path, frontier, make_format(config.output.format))
    try:
        crawl = Crawl(
            spider,
            frontier,
            LeaseProcessor(spider, fetcher, stats),
            output,
            stats,
            workers=config.crawl.workers,
            shutdown_grace=config.crawl.shutdown_grace,
            stop=stop,
        )
        if frontier.resume.counts.done or frontier.resume.counts.queued:
            if crawl.is_finished():
                reporter.already_finished(spider.name, frontier.counts())
            else:
                reporter.resuming(spider.name, frontier.resume)
        with reporter.crawling(crawl, stats):
            return crawl.run()
    finally:
        output.close()
