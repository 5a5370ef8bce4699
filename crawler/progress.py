"""The terminal view of a run: live progress while crawling, and the summary at the end."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import ContextManager

from rich.console import Console, RenderableType
from rich.live import Live
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .engine import Crawl
from .frontier.base import CheckpointStatus, FrontierCounts, ResumeInfo
from .runner import RunReport


class TerminalReporter:
    """Tells the user what the run is doing: on a terminal, live progress lines; elsewhere (CI, a
    cron job, a log file), the same lines printed every ``every`` seconds, not silence until the
    end. Each spider's line has an estimate of the time left: what is queued, at the rate of
    the last ``_RATE_WINDOW`` seconds."""

    def __init__(self, console: Console, *, every: float = 10.0) -> None:
        self.console = console
        self.every = every
        self._rates = _Rates()

    def resuming(self, spider: str, info: ResumeInfo) -> None:
        counts = info.counts
        reclaimed = f", {info.reclaimed} taken back from the stopped run" if info.reclaimed else ""
        self.console.print(
            f"{spider}: resuming: {counts.done} done, {counts.queued} queued{reclaimed}, "
            f"{counts.items} items so far"
        )

    def already_finished(self, spider: str, counts: FrontierCounts) -> None:
        self.console.print(
            f"{spider}: this crawl is already finished ({counts.done} pages, {counts.items} items, "
            f"{counts.failed} failed); run with --fresh to start over"
        )

    def crawling(self, crawls: Sequence[Crawl]) -> ContextManager[object]:
        if not self.console.is_terminal:
            return _every(self.every, lambda: self.console.print(self._lines(crawls)))
        return Live(
            get_renderable=lambda: self._lines(crawls),
            console=self.console,
            refresh_per_second=4,
            transient=True,
        )

    def stopping(self) -> None:
        self.console.print(
            "Stopping: letting in-flight requests finish and saving the checkpoint "
            "(press Ctrl-C again to stop at once)"
        )

    def _lines(self, crawls: Sequence[Crawl]) -> RenderableType:
        """One line per spider still crawling."""
        lines = []
        for crawl in crawls:
            if crawl.already_finished:
                continue
            counts, stats = crawl.counts, crawl.stats
            elapsed = max(stats.elapsed, 1e-9)
            left = self._rates.time_left(crawl.name, counts)
            lines.append(Text.assemble(
                (crawl.name, "bold"),
                f"  done {counts.done}  failed {counts.failed}  queued {counts.queued}  in flight {counts.in_flight}  "
                f"items {counts.items}  {stats.get('pages') / elapsed:,.0f} pages/s  {elapsed:,.0f}s"
                + ("" if left is None else f"  about {_duration(left)} left (estimate)"),
            ))
        return Text("\n").join(lines)


# The widest a summary table is drawn, in columns, where the console is narrower.
_WIDEST = 1000

# Seconds of recent progress an estimate of the time left is made from.
_RATE_WINDOW = 30.0


class _Rates:
    """Each spider's requests completed per second over the last ``_RATE_WINDOW`` seconds."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[tuple[float, int]]] = {}

    def time_left(self, spider: str, counts: FrontierCounts) -> float | None:
        """What is queued and in flight, at the recent rate; None until there is a rate."""
        now, completed = time.monotonic(), counts.done + counts.failed
        samples = self._samples.setdefault(spider, deque())
        samples.append((now, completed))
        while len(samples) > 2 and samples[1][0] <= now - _RATE_WINDOW:
            samples.popleft()
        since, before = samples[0]
        if now - since < 1.0 or completed <= before:
            return None
        return (counts.queued + counts.in_flight) / ((completed - before) / (now - since))


def _duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@contextlib.contextmanager
def _every(interval: float, show: Callable[[], None]) -> Iterator[None]:
    """``show`` called every ``interval`` seconds, from a thread of its own, while the block runs."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            show()

    thread = threading.Thread(target=loop, name="crawler-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def print_status(console: Console, status: CheckpointStatus) -> None:
    """One line per spider (easy to read, and to grep), then who holds what."""
    console.print(f"Checkpoint: {status.location}")
    for spider in status.spiders:
        counts = spider.counts
        last = (
            datetime.fromtimestamp(spider.last_activity).strftime("%Y-%m-%d %H:%M:%S")
            if spider.last_activity
            else "never"
        )
        console.print(
            f"{spider.spider}: {'finished' if spider.finished else 'unfinished'}; "
            f"{counts.done} done, {counts.queued} queued, {counts.in_flight} in flight, "
            f"{counts.failed} failed, {counts.refused} refused by robots.txt; "
            f"{counts.items} items, {counts.rejected} rejected; last activity {last}"
        )
        for owner, leases in sorted(spider.in_flight_owners.items()):
            whose = "running" if owner == status.running else "gone; taken back on the next run"
            console.print(f"  {leases} in flight held by {owner} ({whose})")
        for line in _reason_lines(whole_crawl_reasons(spider.reasons, spider.failed_kinds, spider.failed_statuses)):
            console.print(f"  {line}")
        for line in _host_lines(spider.hosts):
            console.print(f"  {line}")
    console.print(f"A crawl is running now: {status.running}" if status.running else "No crawl is running.")


def print_summary(console: Console, report: RunReport, outputs: dict[str, str]) -> None:
    """The whole crawl as ``crawler status`` shows it (the table, the counts by reason, the
    hosts), and what this run did: the difference the run made to those same counts."""
    stats = report.stats
    table = Table(title="Crawl summary (the whole crawl, as `crawler status` shows it)", header_style="bold")
    table.add_column("spider")
    for column in ("done", "failed", "refused", "items", "rejected", "queued"):
        table.add_column(column, justify="right")
    # A path is one piece, to copy whole: never folded to the console's width (80 columns where
    # the output is not a terminal), the line runs longer instead.
    table.add_column("output", no_wrap=True, min_width=max((len(path) for path in outputs.values()), default=6))
    for result in report.results:
        counts = result.counts
        table.add_row(
            result.spider,
            str(counts.done),
            str(counts.failed),
            str(counts.refused),
            str(counts.items),
            str(counts.rejected),
            str(counts.queued + counts.in_flight),
            outputs.get(result.spider, ""),
        )
    # As wide as the table needs, whatever the console's width (80 where it is not a terminal).
    needed = Measurement.get(console, console.options.update(max_width=_WIDEST), table).maximum
    width = console.width
    if needed > width and not console.is_terminal:
        console.width = needed  # a terminal keeps its own width: it would wrap the lines anyway
    try:
        console.print(table, crop=False)
    finally:
        console.width = width
    run = report.this_run
    rate = run.done / report.elapsed if report.elapsed else 0.0
    console.print(
        f"This run: {run.done} done, {run.failed} failed, {run.refused} refused in {report.elapsed:.1f}s "
        f"({rate:,.0f} pages/s); {run.items} items, {run.rejected} rejected; {stats.get('retries', 0)} retries"
    )
    console.print(
        f"HTTP: {stats.get('http_requests', 0)} requests over {stats.get('connections_opened', 0)} "
        f"connections ({report.requests_per_connection:.1f} per connection) from {report.sessions} "
        f"sessions; {stats.get('pool_discards', 0)} pool discards, {stats.get('pool_evictions', 0)} pool evictions"
    )
    if any(stats.get(name) for name in ("cache_hits", "cache_revalidated", "cache_stores", "cache_errors")):
        console.print(
            f"HTTP cache: {stats.get('cache_hits', 0)} hits, {stats.get('cache_revalidated', 0)} revalidated "
            f"(304), {stats.get('cache_stores', 0)} responses kept, {stats.get('cache_errors', 0)} cache errors"
        )
    if line := _proxy_line(stats):
        console.print(line)
    if processes := stats.get("worker_processes"):
        lost = stats.get("worker_processes_lost", 0)
        stale = stats.get("stale_completions", 0)
        console.print(
            f"Processes: {processes} worker processes fetched and parsed, {lost} lost (their requests went "
            f"back to the queue); {stale} late results of expired leases dropped"
        )
    if stats.get("pool_evictions"):
        console.print(
            f"Pool evictions: the crawl visited more hosts than the {report.host_pools} each worker keeps a "
            "connection to (http.max_host_pools, within the open-file limit); each eviction is a reconnect"
        )
    auth_counts = (
        "logins", "relogins", "login_retries", "token_refreshes", "replayed_requests", "stale_cookies_ignored",
        "cookie_warnings", "header_overrides", "credential_headers",
    )
    if any(stats.get(name) for name in auth_counts):
        console.print(
            f"Auth: {stats.get('logins', 0)} logins ({stats.get('relogins', 0)} after a logout, "
            f"{stats.get('login_retries', 0)} retried), {stats.get('token_refreshes', 0)} token refreshes, "
            f"{stats.get('replayed_requests', 0)} replayed requests, {stats.get('stale_cookies_ignored', 0)} "
            f"stale cookies ignored, {stats.get('cookie_warnings', 0)} cookie warnings, "
            f"{stats.get('header_overrides', 0)} header overrides, {stats.get('credential_headers', 0)} "
            "credential-like headers"
        )
    for line in _reason_lines(whole_crawl_reasons(report.reasons, report.failed_kinds, report.failed_statuses)):
        console.print(line)
    for line in _host_lines(report.hosts):
        console.print(line)


def _proxy_line(stats: Mapping[str, int]) -> str | None:
    """``Proxies: 950 requests through a proxy; errors: 127.0.0.1:3128 3, ...; 2 waits for a
    proxy`` (errors by proxy, the most first), or None for a crawl without proxies."""
    errors = sorted(
        ((name.removeprefix("proxy_errors:"), count) for name, count in stats.items() if name.startswith("proxy_errors:")),
        key=lambda entry: -entry[1],
    )
    if not (stats.get("proxied_requests") or errors):
        return None
    shown = ", ".join(f"{proxy} {count}" for proxy, count in errors[:_HOSTS_SHOWN])
    more = f" and {len(errors) - _HOSTS_SHOWN} more proxies" if len(errors) > _HOSTS_SHOWN else ""
    return (
        f"Proxies: {stats.get('proxied_requests', 0)} requests through a proxy; errors: {shown or 'none'}{more}; "
        f"{stats.get('proxy_waits', 0)} waits for a proxy (not counted as retries)"
    )


# The per-host table is for seeing which hosts slow the crawl or fail; a broad crawl has
# thousands, so only the busiest are listed.
_HOSTS_SHOWN = 10


def _host_lines(hosts: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    busiest = sorted(hosts.items(), key=lambda entry: -(entry[1].get("requests") or 0))[:_HOSTS_SHOWN]
    lines = []
    for host, row in busiest:
        paused = row.get("paused_until")
        pause = f", paused until {datetime.fromtimestamp(paused).strftime('%H:%M:%S')}" if paused else ""
        lines.append(
            f"Host {host}: {row.get('requests', 0):.0f} requests, {row.get('errors', 0):.0f} failed attempts, "
            f"delay {row.get('delay') or 0:.2f}s{pause}"
        )
    if len(hosts) > _HOSTS_SHOWN:
        lines.append(f"... and {len(hosts) - _HOSTS_SHOWN} more hosts")
    return lines


_REASON_TITLES = {
    "failed": "Failed",
    "status": "Failed by HTTP status",
    "filtered": "Filtered",
    "refused": "Refused",
    "skipped": "Skipped",
    "malformed": "Malformed",
    "robots": "robots.txt",
    "redirects": "Redirects",
    "dropped": "Items dropped by pipelines",
}


def whole_crawl_reasons(
    reasons: Mapping[str, int], failed_kinds: Mapping[str, int], failed_statuses: Mapping[int, int]
) -> dict[str, int]:
    """Counts by reason over every run, with failures as the checkpoint holds them now: those
    queued again by ``crawler retry-failed`` are no longer failed, so ``Failed:`` always adds up
    to the failed count, and ``Failed by HTTP status:`` to its HTTPStatusError part."""
    counts = {name: count for name, count in reasons.items() if not name.startswith(("failed:", "status:"))}
    counts.update({f"failed:{kind}": count for kind, count in failed_kinds.items()})
    counts.update({f"status:{status}": count for status, count in failed_statuses.items()})
    return counts


def _reason_lines(counts: Mapping[str, int]) -> list[str]:
    """``Filtered: offsite 12, depth 3``: one line per family of counts by reason."""
    families: dict[str, list[str]] = {}
    for name, count in sorted(counts.items()):
        family, _, reason = name.partition(":")
        if count:
            families.setdefault(family, []).append(f"{reason} {count}")
    return [f"{_REASON_TITLES.get(family, family)}: {', '.join(parts)}" for family, parts in families.items()]
