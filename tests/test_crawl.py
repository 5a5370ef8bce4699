"""Whole crawls of the practice site: completeness, dedupe, connection reuse, cleanup, resume."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from crawler.config import Config
from crawler.frontier.sqlite import Checkpoint
from crawler.practice import PracticeSite
from crawler.practice.catalogue import product
from crawler.runner import run_crawl
from conftest import PROBE_SPIDER
from helpers import interrupt_when, lease_from

REPO = Path(__file__).resolve().parent.parent
PRODUCTS_SPIDER = (REPO / "spiders" / "products.py").read_text()


@pytest.fixture
def products_config(write_config, tmp_path: Path):
    def make(site: PracticeSite, extra: str = "") -> Config:
        return write_config(
            f"""
            [[spiders]]
            spider = "products"
            args = {{ start_url = "{site.url}/" }}

            [crawl]
            workers = 8

            [checkpoint]
            path = "checkpoint.db"
            """
            + extra,
            spiders={"products": PRODUCTS_SPIDER},
        )

    return make


def output_items(config: Config, spider: str = "products") -> list[dict[str, object]]:
    return [json.loads(line) for line in config.output_path(spider).read_text().splitlines()]


def established_client_connections(port: int) -> int:
    """Client-side TCP connections to ``port`` that are still open, read from the kernel."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port == port and fields[3] == "01":  # 01 = ESTABLISHED
                    count += 1
    return count


def test_full_crawl_writes_every_product_exactly_once(site: PracticeSite, products_config) -> None:
    config = products_config(site)
    report = run_crawl(config)
    items = output_items(config)
    assert sorted(item["id"] for item in items) == list(range(1, 121))
    for item in items:
        expected = product(int(item["id"]))
        assert item["name"] == expected["name"]
        assert item["price"] == expected["price"]
        assert item["stock"] == expected["stock"]
        assert item["url"] == f"{site.url}{expected['url']}"
    # Home + 6 listing pages + 120 products, each fetched once although linked many times, and
    # the site's robots.txt once.
    assert report.stats["pages"] == 127
    assert site.counters.requests == 128
    assert site.counters.hits("/robots.txt") == 1
    assert all(site.counters.hits(f"/product/{n}") == 1 for n in range(1, 121))
    assert report.results[0].finished


def test_connections_are_reused_one_per_worker_at_most(site: PracticeSite, products_config) -> None:
    report = run_crawl(products_config(site))
    assert site.counters.connections <= 8
    assert report.stats["connections_opened"] == site.counters.connections
    assert report.stats.get("pool_discards", 0) == 0
    assert report.requests_per_connection >= 127 / 8


def test_every_session_is_closed_at_the_end(site: PracticeSite, products_config) -> None:
    fds_before = len(os.listdir("/proc/self/fd"))
    report = run_crawl(products_config(site))
    assert report.sessions == 8
    assert established_client_connections(site.port) == 0
    # The server notices every client hang up.
    deadline = time.monotonic() + 5
    while site.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert site.open_connections == 0
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_a_link_seen_many_times_is_fetched_once(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/links?n=30&repeat=4"], follow_links=True)
    report = run_crawl(config)
    assert report.stats["pages"] == 31
    assert all(site.counters.hits(f"/links/target/{n}") == 1 for n in range(30))


def test_rerunning_a_finished_crawl_fetches_nothing(site: PracticeSite, products_config) -> None:
    config = products_config(site)
    run_crawl(config)
    site.counters.reset()
    report = run_crawl(config)
    assert report.results[0].already_finished
    assert site.counters.requests == 0
    assert len(output_items(config)) == 120


def test_fresh_starts_over(site: PracticeSite, products_config) -> None:
    config = products_config(site)
    run_crawl(config)
    site.counters.reset()
    run_crawl(config, fresh=True)
    assert site.counters.requests == 128  # 127 pages and robots.txt
    assert len(output_items(config)) == 120


def test_resume_after_a_stop_writes_every_item_exactly_once(products_config) -> None:
    with PracticeSite(products=120, latency=0.05) as slow_site:
        config = products_config(slow_site)
        watcher = interrupt_when(lambda: slow_site.counters.requests >= 40)
        first = run_crawl(config)
        watcher.join()
        assert first.interrupted
        first_count = len(output_items(config))
        assert 0 < first_count < 120

        second = run_crawl(config)
        assert second.results[0].finished
        ids = [item["id"] for item in output_items(config)]
        assert sorted(ids) == list(range(1, 121))
        # A graceful stop commits what was in flight: no product page was fetched twice.
        assert all(slow_site.counters.hits(f"/product/{n}") == 1 for n in range(1, 121))


def test_resume_after_a_crash_requeues_in_flight_work(site: PracticeSite, products_config) -> None:
    """Leases left in flight by a dead process go back to the queue on the next open."""
    config = products_config(site)
    path = config.resolve(config.checkpoint.path)
    with Checkpoint(path, owner="crashed") as checkpoint:
        frontier = checkpoint.frontier("products")
        from crawler import Request
        from crawler.frontier.base import Entry

        frontier.add([Entry.of("products", Request(f"{site.url}/", callback="parse"), 0)])
        frontier.set_state("start_requests_queued", "1")
        assert len(lease_from(frontier, 10)) == 1  # the "crashed" run took it and never finished
    report = run_crawl(config)
    assert report.results[0].finished
    assert len(output_items(config)) == 120


def test_callback_errors_are_counted_and_the_crawl_goes_on(site: PracticeSite, write_config, tmp_path: Path) -> None:
    config = write_config(
        """
        [[spiders]]
        spider = "fragile"
        [checkpoint]
        path = "checkpoint.db"
        """,
        spiders={
            "fragile": f"""
            from crawler import Spider

            class Fragile(Spider):
                name = "fragile"
                start_urls = ["{site.url}/links?n=10"]

                def parse(self, response):
                    if "/links/target/3" in response.url:
                        yield {{"partial": True}}
                        raise ValueError("boom")
                    if "/links/target/4" in response.url:
                        yield 42
                    yield {{"url": response.url}}
                    yield from response.follow_all(response.css("a::attr(href)").getall())
            """
        },
    )
    report = run_crawl(config)
    assert report.stats["callback_errors"] == 1
    assert report.stats["malformed:output"] == 1
    items = output_items(config, "fragile")
    assert len(items) == 10  # 11 pages, one of which raised: its partial item is not kept
    assert {"partial": True} not in items
    with Checkpoint(config.resolve(config.checkpoint.path), "test") as checkpoint:
        [failed] = checkpoint.frontier("fragile").failed(10)
    assert failed.url.endswith("/links/target/3") and "ValueError: boom" in failed.error


def test_invalid_items_go_to_the_rejected_store(site: PracticeSite, write_config) -> None:
    config = write_config(
        """
        [[spiders]]
        spider = "strict"
        [checkpoint]
        path = "checkpoint.db"
        """,
        spiders={
            "strict": f"""
            from pydantic import BaseModel
            from crawler import Spider

            class Page(BaseModel):
                url: str
                number: int

            class Strict(Spider):
                name = "strict"
                item_model = Page
                start_urls = ["{site.url}/links?n=4"]

                def parse(self, response):
                    tail = response.url.rsplit("/", 1)[-1]
                    yield {{"url": response.url, "number": tail if tail.isdigit() else "not a number"}}
                    yield from response.follow_all(response.css("a::attr(href)").getall())
            """
        },
    )
    report = run_crawl(config)
    assert report.stats["rejected_items"] == 1
    assert len(output_items(config, "strict")) == 4
    with Checkpoint(config.resolve(config.checkpoint.path), "test") as checkpoint:
        [rejected] = checkpoint.frontier("strict").rejected(10)
    assert rejected.url == f"{site.url}/links?n=4"
    assert rejected.error.startswith("number:")
    assert json.loads(rejected.data)["number"] == "not a number"


def test_csv_output(site: PracticeSite, products_config) -> None:
    config = products_config(site, '\n[output]\nformat = "csv"\n')
    run_crawl(config)
    lines = config.output_path("products").read_text().splitlines()
    assert lines[0] == "id,name,price,sku,category,description,stock,rating,url"
    assert len(lines) == 121


def test_a_stuck_request_does_not_hold_shutdown_past_the_grace_period(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/delay?seconds=30"], "\n[crawl]\nshutdown_grace = 0.5\n")
    watcher = interrupt_when(lambda: site.counters.hits("/delay") >= 1)
    started = time.monotonic()
    report = run_crawl(config)
    watcher.join()
    assert report.interrupted
    assert time.monotonic() - started < 5
    # Still owed: the next run takes the abandoned lease back and fetches it.
    with Checkpoint(config.resolve(config.checkpoint.path), "test") as checkpoint:
        frontier = checkpoint.frontier("probe")
        assert frontier.resume.reclaimed == 1
        assert frontier.counts().queued == 1


def test_an_interrupted_fresh_run_has_forgotten_every_spider(write_config, tmp_path: Path) -> None:
    with PracticeSite(products=60, latency=0.03) as site:
        spiders = {"products": PRODUCTS_SPIDER, "probe": PROBE_SPIDER}
        config = write_config(
            f"""
            [[spiders]]
            spider = "products"
            args = {{ start_url = "{site.url}/" }}
            [[spiders]]
            spider = "probe"
            args = {{ urls = ["{site.url}/links/target/1"] }}
            [checkpoint]
            path = "checkpoint.db"
            """,
            spiders=spiders,
        )
        run_crawl(config)
        assert config.output_path("probe").exists()
        site.counters.reset()
        watcher = interrupt_when(lambda: site.counters.hits("/product/5") > 0)
        stopped = run_crawl(config, fresh=True)
        watcher.join()
        assert stopped.interrupted
        run_crawl(config)
        # The probe's crawl was forgotten with the products' (both start over, side by side): its
        # page was fetched again once, over the two runs, and its output holds it once.
        assert site.counters.hits("/links/target/1") == 1
        assert len(config.output_path("probe").read_text().splitlines()) == 1


def test_spiders_of_one_config_crawl_at_once_within_the_hosts_limits(write_config) -> None:
    """Two spiders on one site: they run side by side, and together keep to its concurrency."""
    with PracticeSite(products=60, per_page=20, latency=0.02) as site:
        targets = [f"{site.url}/links/target/{number}" for number in range(1, 41)]
        config = write_config(
            f"""
            [[spiders]]
            spider = "products"
            args = {{ start_url = "{site.url}/" }}
            [[spiders]]
            spider = "probe"
            args = {{ urls = {json.dumps(targets)} }}
            [crawl]
            workers = 8
            [politeness]
            concurrency = 3
            [checkpoint]
            path = "checkpoint.db"
            """,
            spiders={"products": PRODUCTS_SPIDER, "probe": PROBE_SPIDER},
        )
        report = run_crawl(config)
        most_at_once = site.counters.max_concurrent
        products, probes = site.counters.arrivals("/product/"), site.counters.arrivals("/links/target/")

    assert [result.spider for result in report.results] == ["products", "probe"]
    assert all(result.finished for result in report.results)
    assert sorted(item["id"] for item in output_items(config)) == list(range(1, 61))
    assert len(output_items(config, "probe")) == 40
    assert most_at_once == 3
    # Side by side, not one after the other: the second spider's first request came before the
    # first spider's last.
    assert len(products) == 60 and len(probes) == 40
    assert min(probes) < max(products)
    # Each spider's per-host table counts its own requests only.
    assert [sum(row["requests"] for row in result.hosts.values()) for result in report.results] == [64, 40]
