"""One crawl shared by worker processes (``crawl.processes``), against the practice site.

What the site saw decides: each page requested once, per-host limits held for the crawl as a
whole, the delay between two requests to the host kept whichever process sent them. A worker
process killed mid-crawl loses nothing: its leases go back to the queue and the others finish.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from crawler.config import Config
from crawler.practice import PracticeSite
from crawler.runner import RunReport, run_crawl

from helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
PRODUCTS_SPIDER = (REPO / "spiders" / "products.py").read_text(encoding="utf-8")


@pytest.fixture
def processes_config(write_config):
    def make(
        site: PracticeSite, *, processes: int = 2, workers: int = 8, concurrency: int | None = None, delay: float = 0.0
    ) -> Config:
        return write_config(
            f"""
            [[spiders]]
            spider = "products"
            args = {{ start_url = "{site.url}/" }}

            [crawl]
            workers = {workers}
            processes = {processes}

            [politeness]
            concurrency = {concurrency or workers}
            delay = {delay}

            [checkpoint]
            path = "checkpoint.db"
            """,
            spiders={"products": PRODUCTS_SPIDER},
        )

    return make


def output_ids(config: Config) -> list[int]:
    lines = config.output_path("products").read_text().splitlines()
    return sorted(int(json.loads(line)["id"]) for line in lines)


def product_paths(site: PracticeSite, products: int) -> list[str]:
    return [f"/product/{number}" for number in range(1, products + 1)]


def assert_whole_crawl(report: RunReport, config: Config, products: int) -> None:
    assert not report.interrupted
    assert report.results[0].finished
    assert output_ids(config) == list(range(1, products + 1)), "each item exactly once"
    assert report.whole_crawl.failed == 0


def test_two_processes_fetch_every_page_once_and_write_every_item_once(processes_config) -> None:
    with PracticeSite(products=120, per_page=20, latency=0.002) as site:
        config = processes_config(site, processes=2, workers=8)
        report = run_crawl(config)
        hits = {path: site.counters.hits(path) for path in product_paths(site, 120)}
        robots = site.counters.hits("/robots.txt")
        connections = site.counters.connections

    assert_whole_crawl(report, config, 120)
    assert report.stats["worker_processes"] == 2
    assert set(hits.values()) == {1}, {path: count for path, count in hits.items() if count != 1}
    # robots.txt once for the crawl (the first worker to ask fetches it for both processes), not
    # once each, and on its own session: no connection but the workers'.
    assert robots == report.stats["robots:fetched"] == 1
    # Each worker process ran its share of the 8 workers, each thread with its own session.
    assert report.sessions == 8
    assert connections <= 8
    assert report.stats["pages"] == report.whole_crawl.done


def test_per_host_concurrency_holds_for_the_whole_crawl_not_per_process(processes_config) -> None:
    # 8 workers in 2 processes, 2 requests at a time to the host: were the limit kept per process,
    # the site would see 4 at once.
    with PracticeSite(products=60, per_page=20, latency=0.03) as site:
        config = processes_config(site, processes=2, workers=8, concurrency=2)
        report = run_crawl(config)
        most_at_once = site.counters.max_concurrent

    assert_whole_crawl(report, config, 60)
    assert most_at_once == 2


def test_the_delay_between_requests_to_a_host_holds_across_processes(processes_config) -> None:
    delay = 0.2
    with PracticeSite(products=12, per_page=6) as site:
        config = processes_config(site, processes=2, workers=4, concurrency=1, delay=delay)
        report = run_crawl(config)
        arrivals = sorted(site.counters.arrivals("/product/"))

    assert_whole_crawl(report, config, 12)
    # The coordinator starts one request per delay (whichever process sends it), so the site
    # sees them spread over at least that; a request may reach it a little late after the pipe
    # (how late depends on the machine's load), so the gap before the next one may look shorter.
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) * delay - 0.1
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert min(gaps) >= delay / 2, sorted(gaps)[:3]


def test_a_worker_process_killed_mid_crawl_loses_nothing_and_the_other_finishes(processes_config, caplog) -> None:
    with PracticeSite(products=200, per_page=20, latency=0.02) as site:
        config = processes_config(site, processes=2, workers=8)
        result: list[RunReport] = []
        crawl = threading.Thread(target=lambda: result.append(run_crawl(config)))
        crawl.start()
        try:
            wait_until(lambda: site.counters.hits("/product/20") or site.counters.requests > 40, timeout=60)
            victim = multiprocessing.active_children()[0]
            os.kill(victim.pid, signal.SIGKILL)
        finally:
            crawl.join(120)
        assert not crawl.is_alive(), "the crawl did not finish after one worker process died"
        repeated = [path for path in product_paths(site, 200) if site.counters.hits(path) > 1]

    [report] = result
    assert_whole_crawl(report, config, 200)
    assert report.stats["worker_processes_lost"] == 1
    # Only what the dead process had in hand was fetched again: at most its threads and prefetch.
    assert len(repeated) <= 4 + 2, repeated
    assert any("worker process" in message and "go back to the queue" in message for message in caplog.messages)


def test_a_crawl_whose_worker_processes_all_die_stops_and_resumes(processes_config) -> None:
    with PracticeSite(products=150, per_page=15, latency=0.02) as site:
        config = processes_config(site, processes=2, workers=4)
        result: list[RunReport | BaseException] = []

        def crawl() -> None:
            try:
                result.append(run_crawl(config))
            except BaseException as error:  # noqa: BLE001 - the test looks at it
                result.append(error)

        thread = threading.Thread(target=crawl)
        thread.start()
        try:
            wait_until(lambda: site.counters.requests > 30, timeout=60)
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)
        finally:
            thread.join(120)
        assert not thread.is_alive()
        [stopped] = result
        assert "every worker process died" in str(stopped)

        time.sleep(0.1)
        resumed = run_crawl(config)

    assert_whole_crawl(resumed, config, 150)


def test_the_workers_are_shared_out_between_the_processes_and_no_more(processes_config) -> None:
    # 7 workers in 3 processes: 3, 2 and 2 threads, each with its own session; never 3 x 3.
    with PracticeSite(products=40, per_page=20, latency=0.01) as site:
        config = processes_config(site, processes=3, workers=7)
        report = run_crawl(config)
        connections = site.counters.connections

    assert_whole_crawl(report, config, 40)
    assert report.stats["worker_processes"] == 3
    assert report.sessions == 7
    assert connections <= 7 + 1  # and one for robots.txt, which the coordinator fetches


def test_worker_processes_start_where_their_launcher_cannot_be_run(tmp_path: Path) -> None:
    """A temporary folder mounted noexec: the launcher script cannot be run, and the process is
    started as multiprocessing starts it."""
    from crawler.workers.processes import _Launcher

    launcher = _Launcher()
    try:
        assert launcher.script is not None
        launcher.script.chmod(0o600)  # as good as noexec: exec fails with EACCES
        process = multiprocessing.get_context("spawn").Process(target=os.getpid)
        launcher.start(process)
        process.join(30)
        assert process.exitcode == 0
        assert launcher.script is None  # and the next ones start the same way
    finally:
        launcher.close()
