"""Crawls whose checkpoint is on a Redis server shared by several ``crawler run`` processes.

A real ``redis-server`` (tests/redis_server.py) and the practice site, served by this test
process so that its counters say what every crawler process sent it. Each ``crawler run`` is a
process of its own, as on separate machines: it joins the crawl by its name on the server.
What decides is what the site served and what the output file holds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.config import Config, load_config
from crawler.exceptions import CheckpointError
from crawler.practice import PracticeSite
from crawler.runner import backend_of, limits_of, run_crawl

from helpers import wait_until

from redis_server import RedisServer


REPO = Path(__file__).resolve().parent.parent
PRODUCTS_SPIDER = (REPO / "spiders" / "products.py").read_text(encoding="utf-8")
LEASE_TIME = 2.0


def redis_project(
    folder: Path, server: RedisServer, site: PracticeSite, *, workers: int = 4, crawl: str | None = None,
    concurrency: int | None = None, delay: float = 0.0,
) -> Path:
    (folder / "spiders").mkdir(parents=True, exist_ok=True)
    (folder / "spiders" / "__init__.py").touch()
    (folder / "spiders" / "products.py").write_text(PRODUCTS_SPIDER)
    config = folder / "config.toml"
    config.write_text(textwrap.dedent(
        f"""
        [[spiders]]
        spider = "products"
        args = {{ start_url = "{site.url}/" }}

        [crawl]
        workers = {workers}

        [politeness]
        concurrency = {concurrency or workers * 3}
        delay = {delay}

        [checkpoint]
        backend = "redis"
        url = "{server.url}"
        crawl = "{crawl or server.new_crawl()}"
        lease_time = {LEASE_TIME}
        """
    ))
    return config


def output_ids(folder: Path) -> Counter[int]:
    lines = (folder / "output" / "products.jsonl").read_text().splitlines()
    return Counter(int(json.loads(line)["id"]) for line in lines)


def pages_done(config: Config) -> int:
    try:
        spiders = backend_of(config).status({}).spiders
    except CheckpointError:
        return 0  # not made yet: no process has opened the crawl
    return spiders[0].counts.done if spiders else 0


@pytest.fixture
def reaped() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes killed, whatever the test did, when it ends."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_run(folder: Path, name: str) -> subprocess.Popen[bytes]:
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"{name}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "crawler.cli", "run", "config.toml"],
            cwd=folder, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True,
        )


def finished(proc: subprocess.Popen[bytes], folder: Path, name: str, timeout: float = 120.0) -> None:
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        code = None
    err = (folder / "logs" / f"{name}.err").read_text(errors="replace")
    assert code == 0, f"{name}: exit code {code}\n{err}"
    assert "Traceback" not in err, err


def test_a_crawl_on_redis_writes_every_item_once_and_says_it_is_finished(redis_server, tmp_path) -> None:
    with PracticeSite(products=60, per_page=20) as site:
        config = load_config(redis_project(tmp_path, redis_server, site))
        report = run_crawl(config)
        again = run_crawl(config)

    assert report.results[0].finished and not report.interrupted
    assert output_ids(tmp_path) == Counter(range(1, 61))
    assert again.results[0].already_finished
    status = backend_of(config).status({"products": limits_of(config.spiders[0])})
    assert status.location == redis_server.url and status.running is None
    assert status.spiders[0].finished and status.spiders[0].counts.done == report.whole_crawl.done


def test_three_processes_share_one_crawl_each_page_fetched_once(redis_server, tmp_path, reaped) -> None:
    with PracticeSite(products=150, per_page=10, latency=0.01) as site:
        redis_project(tmp_path, redis_server, site)
        runs = [start_run(tmp_path, f"run-{number}") for number in range(3)]
        reaped.extend(runs)
        for number, proc in enumerate(runs):
            finished(proc, tmp_path, f"run-{number}")
        hits = Counter({number: site.counters.hits(f"/product/{number}") for number in range(1, 151)})
        robots = site.counters.hits("/robots.txt")

    assert set(hits.values()) == {1}, "each page fetched once by the whole cluster"
    assert robots == 1, "robots.txt fetched once for the crawl, not once per process"
    assert output_ids(tmp_path) == Counter(range(1, 151)), "each item written once"


def test_one_of_three_killed_mid_crawl_loses_nothing_and_its_work_comes_back(redis_server, tmp_path, reaped) -> None:
    with PracticeSite(products=200, per_page=10, latency=0.03) as site:
        config = load_config(redis_project(tmp_path, redis_server, site))
        runs = [start_run(tmp_path, f"run-{number}") for number in range(3)]
        reaped.extend(runs)
        wait_until(lambda: pages_done(config) >= 40, timeout=60)
        os.killpg(runs[0].pid, signal.SIGKILL)
        runs[0].wait()
        killed_at = time.monotonic()
        for number, proc in enumerate(runs[1:], start=1):
            finished(proc, tmp_path, f"run-{number}")
        took = time.monotonic() - killed_at

    assert output_ids(tmp_path) == Counter(range(1, 201)), "nothing lost, nothing twice"
    status = backend_of(config).status({})
    assert status.spiders[0].finished and status.spiders[0].counts.in_flight == 0
    # What the dead process held came back when its leases ran out, not at the end of time.
    assert took < 60, took


def test_every_process_killed_then_one_run_finishes_with_exactly_the_items(redis_server, tmp_path, reaped) -> None:
    with PracticeSite(products=120, per_page=10, latency=0.03) as site:
        config = load_config(redis_project(tmp_path, redis_server, site))
        runs = [start_run(tmp_path, f"run-{number}") for number in range(2)]
        reaped.extend(runs)
        wait_until(lambda: pages_done(config) >= 30, timeout=60)
        for proc in runs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        again = start_run(tmp_path, "resumed")
        finished(again, tmp_path, "resumed")

    assert output_ids(tmp_path) == Counter(range(1, 121))


@pytest.mark.parametrize("url", ["redis://:secret@127.0.0.1:6379/0", "http://127.0.0.1:6379"])
def test_a_redis_url_with_a_password_or_of_another_scheme_is_one_line_naming_the_field(tmp_path, url) -> None:
    (tmp_path / "config.toml").write_text(
        f'[[spiders]]\nspider = "products"\n\n[checkpoint]\nbackend = "redis"\nurl = "{url}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "crawler.cli", "run", "config.toml"], cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint" in lines[0] and "secret" not in lines[0], proc.stderr


def test_two_machines_keep_one_hosts_limits_together(redis_server, tmp_path, reaped) -> None:
    # Two projects in two folders are two owners with files of their own, as two machines are;
    # 4 workers each, 2 requests at a time to the host: kept per machine, the site would see 4.
    crawl = redis_server.new_crawl()
    machines = [tmp_path / "a", tmp_path / "b"]
    with PracticeSite(products=60, per_page=10, latency=0.05) as site:
        for folder in machines:
            redis_project(folder, redis_server, site, workers=4, crawl=crawl, concurrency=2)
        runs = [start_run(folder, "run") for folder in machines]
        reaped.extend(runs)
        for folder, proc in zip(machines, runs, strict=True):
            finished(proc, folder, "run")
        most_at_once = site.counters.max_concurrent
        hits = Counter(site.counters.hits(f"/product/{number}") for number in range(1, 61))

    assert most_at_once == 2
    assert hits == Counter({1: 60}), "each page fetched once by the two machines together"
    for folder in machines:  # each machine's own file, each item once
        assert output_ids(folder) == Counter(range(1, 61))


def test_the_delay_between_requests_to_a_host_holds_across_machines(redis_server, tmp_path, reaped) -> None:
    delay, crawl = 0.15, redis_server.new_crawl()
    machines = [tmp_path / "a", tmp_path / "b"]
    with PracticeSite(products=12, per_page=6) as site:
        for folder in machines:
            redis_project(folder, redis_server, site, workers=2, crawl=crawl, concurrency=1, delay=delay)
        runs = [start_run(folder, "run") for folder in machines]
        reaped.extend(runs)
        for folder, proc in zip(machines, runs, strict=True):
            finished(proc, folder, "run")
        arrivals = sorted(site.counters.arrivals("/product/"))

    assert len(arrivals) == 12
    # The server gives each start its time, one delay after the one before, whichever machine
    # sends it; a request may reach the site a little late, so the gaps are checked loosely.
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) * delay - 0.1
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    assert min(gaps) >= delay / 2, sorted(gaps)[:3]


def test_the_redis_server_killed_and_restarted_mid_crawl_loses_nothing(tmp_path, reaped) -> None:
    # With an append-only file synced at every write, what the server acknowledged survives a
    # kill -9; the crawl waits for it (saying so) and goes on where it was.
    data = tmp_path / "redis-data"
    data.mkdir()
    server = RedisServer(data).start()
    try:
        with PracticeSite(products=120, per_page=10, latency=0.03) as site:
            config = load_config(redis_project(tmp_path, server, site))
            runs = [start_run(tmp_path, f"run-{number}") for number in range(2)]
            reaped.extend(runs)
            wait_until(lambda: pages_done(config) >= 30, timeout=60)
            server.restart(down_for=1.5, killed=True)
            for number, proc in enumerate(runs):
                finished(proc, tmp_path, f"run-{number}")
    finally:
        server.stop()

    assert output_ids(tmp_path) == Counter(range(1, 121))
    logs = [(tmp_path / "logs" / f"run-{number}.err").read_text() for number in range(2)]
    assert any("waiting up to" in log and "answers again" in log for log in logs), logs


def test_a_process_started_while_the_server_is_down_waits_for_it_and_crawls(tmp_path, reaped) -> None:
    server = RedisServer().start()
    log = tmp_path / "logs" / "run.err"
    try:
        with PracticeSite(products=30, per_page=10) as site:
            redis_project(tmp_path, server, site)

            def start_while_down() -> bool:
                # The run starts once the server is down, and the server stays down until the
                # run has said it waits: its first step (opening the crawl) met no server.
                if not reaped:
                    reaped.append(start_run(tmp_path, "run"))
                return log.exists() and "waiting up to" in log.read_text(errors="replace")

            server.restart(killed=True, down_until=start_while_down)
            finished(reaped[0], tmp_path, "run")
    finally:
        server.stop()
    assert output_ids(tmp_path) == Counter(range(1, 31))
    assert "answers again" in log.read_text()


def test_export_writes_a_machines_file_from_the_shared_checkpoint(redis_server, tmp_path) -> None:
    # Another machine (another folder) joins after the crawl: `crawler export` gives it the file.
    crawl = redis_server.new_crawl()
    with PracticeSite(products=40, per_page=20) as site:
        run_crawl(load_config(redis_project(tmp_path / "a", redis_server, site, crawl=crawl)))
        redis_project(tmp_path / "b", redis_server, site, crawl=crawl)
    for _ in range(2):  # the second time there is nothing to add
        proc = subprocess.run(
            [sys.executable, "-m", "crawler.cli", "export", "config.toml"], cwd=tmp_path / "b", capture_output=True,
            text=True, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
    assert "up to date (0 items added)" in proc.stdout
    assert output_ids(tmp_path / "b") == output_ids(tmp_path / "a") == Counter(range(1, 41))


def test_a_process_started_again_in_its_place_takes_its_own_leases_back_at_once(redis_server, tmp_path, reaped) -> None:
    # Leases last 30 s here: a run that finishes well within that took back the dead process's
    # leases when it started (the same machine slot is the same owner), not when they expired.
    with PracticeSite(products=100, per_page=10, latency=0.05) as site:
        config_path = redis_project(tmp_path, redis_server, site)
        config_path.write_text(config_path.read_text().replace(f"lease_time = {LEASE_TIME}", "lease_time = 30"))
        config = load_config(config_path)
        first = start_run(tmp_path, "first")
        reaped.append(first)
        wait_until(lambda: pages_done(config) >= 20, timeout=60)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
        started = time.monotonic()
        report = run_crawl(config)
        took = time.monotonic() - started

    assert report.results[0].finished
    assert output_ids(tmp_path) == Counter(range(1, 101))
    assert took < 20, took


def test_worker_processes_on_each_machine_share_the_crawl_too(redis_server, tmp_path, reaped) -> None:
    crawl = redis_server.new_crawl()
    machines = [tmp_path / "a", tmp_path / "b"]
    with PracticeSite(products=80, per_page=10, latency=0.01) as site:
        for folder in machines:
            path = redis_project(folder, redis_server, site, crawl=crawl)
            path.write_text(path.read_text().replace("[crawl]\n", "[crawl]\nprocesses = 2\n"))
        runs = [start_run(folder, "run") for folder in machines]
        reaped.extend(runs)
        for folder, proc in zip(machines, runs, strict=True):
            finished(proc, folder, "run")
        hits = Counter(site.counters.hits(f"/product/{number}") for number in range(1, 81))
        robots = site.counters.hits("/robots.txt")

    assert hits == Counter({1: 80})
    assert robots == 1, "robots.txt once for the crawl, not once per machine"
    for folder in machines:
        assert output_ids(folder) == Counter(range(1, 81))
