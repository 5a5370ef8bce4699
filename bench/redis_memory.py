"""Redis checkpoint memory benchmark: how many bytes per URL does the shared seen-set cost?

The issue's target: at most 24 bytes per URL of Redis memory for the dedupe structure, at
1,000,000 URLs.

It starts a fresh ``redis-server`` of its own on a free loopback port (nothing saved to disk),
opens a crawl through ``RedisBackend``, and adds ``--urls`` URLs through the frontier, in batches
as a crawl's commits bring them (each ``add`` is one script: dedupe, then queue). The URLs are
distinct, on ``--hosts`` hosts, and go through ``Entry.of``, so their fingerprints, hosts and
stored forms are the real ones. Then it reports:

- ``INFO memory`` used_memory: its growth over the whole add, per URL (seen-set, queue and
  requests together), and its growth once everything but the seen-set is deleted again (DEL,
  not UNLINK, so the memory is given back before it is read): the seen-set's real cost, with the
  server's own table slots and allocator rounding in it;
- ``MEMORY USAGE`` of every bucket (records, key, object, rounding; not the table slots), per
  URL, and a few buckets as samples.

It exits with 1 if the adds went wrong (not exactly ``--urls`` new), with 2 if the target is
missed, else 0. A million URLs take about a minute on a 2-core machine, mostly ``Entry.of``.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import redis

from crawler.frontier import Entry
from crawler.frontier.redis import RedisBackend
from crawler.frontier.redis_keys import BUCKETS
from crawler.request import Request

SPIDER = "memory_bench"
CRAWL = "bench-crawl"
BYTES_PER_URL_LIMIT = 24
BATCH = 2_000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=int, default=1_000_000)
    parser.add_argument("--hosts", type=int, default=100)
    options = parser.parse_args()
    with FreshServer() as port:
        return measure(port, options.urls, options.hosts)


class ServerDidNotStart(RuntimeError):
    pass


class FreshServer:
    """A fresh redis-server on a free port, for the length of a ``with`` block."""

    def __enter__(self) -> int:
        executable = shutil.which("redis-server")
        if executable is None:
            raise ServerDidNotStart("redis-server is not on PATH (apt-get install redis-server)")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.process = subprocess.Popen(
            [executable, "--save", "", "--appendonly", "no", "--port", str(self.port), "--bind", "127.0.0.1"],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        with redis.Redis(port=self.port) as client:
            while True:
                try:
                    client.ping()
                    return self.port
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        self.process.kill()
                        raise ServerDidNotStart(f"redis-server did not answer on port {self.port}") from None
                    time.sleep(0.02)

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def urls(count: int, hosts: int) -> Iterator[str]:
    """Distinct URLs shaped like a shop's, spread over ``hosts`` hosts."""
    for number in range(count):
        yield f"https://shop{number % hosts}.example/catalogue/item-{number}?colour={number % 7}"


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure(port: int, count: int, hosts: int) -> int:
    url = f"redis://127.0.0.1:{port}/0"
    backend = RedisBackend(url, CRAWL)
    with backend.open("bench:1") as store, redis.Redis(port=port) as client:
        frontier = store.frontier(SPIDER)
        version, allocator = client.info("server")["redis_version"], client.info("memory")["mem_allocator"]
        print(f"redis {version} ({allocator}), crawl {CRAWL!r}, {count:,} URLs")
        before = used_memory(client)

        started, added, batch = time.perf_counter(), 0, []
        for text in urls(count, hosts):
            batch.append(Entry.of(SPIDER, Request(text), 0))
            if len(batch) == BATCH:
                added += frontier.add(batch)
                batch = []
        added += frontier.add(batch)
        elapsed = time.perf_counter() - started
        print(f"added {added:,} in {elapsed:.1f} s ({added / elapsed:,.0f} URLs/s, Entry.of included)")
        if added != count:
            print(f"FAIL: {added:,} new of {count:,} distinct URLs")
            return 1
        whole = used_memory(client) - before
        print(f"used_memory, all of it (seen-set, queue, stored requests): {whole / count:.1f} bytes per URL")

        keys = backend.keys.spider(int(client.hget(backend.keys.spiders, SPIDER)))
        buckets = keys.buckets()
        with client.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.memory_usage(bucket, samples=0)
            usages = [usage for usage in pipe.execute() if usage is not None]
        with client.pipeline(transaction=False) as pipe:
            for bucket in buckets[:: BUCKETS // 8]:
                pipe.strlen(bucket).memory_usage(bucket, samples=0)
            samples = pipe.execute()
        print(
            f"MEMORY USAGE of the {len(usages):,} buckets: {sum(usages) / count:.1f} bytes per URL "
            f"(per bucket: median {statistics.median(usages):.0f}, min {min(usages)}, max {max(usages)} bytes)"
        )
        print("  samples (records bytes -> MEMORY USAGE):", ", ".join(f"{strlen} -> {usage}" for strlen, usage in zip(samples[::2], samples[1::2])))

        # Everything of the spider but its seen-set goes: what stays is the seen-set's share.
        queues = [keys.queue(host.decode()) for host in client.hkeys(keys.prefix + "ready")]
        client.delete(*keys.fixed, *queues)
        seen_set = used_memory(client) - before
        print(f"used_memory of the seen-set alone: {seen_set / count:.1f} bytes per URL (target <= {BYTES_PER_URL_LIMIT})")
    backend.discard()
    if seen_set / count > BYTES_PER_URL_LIMIT:
        print("FAIL: the seen-set is over its target")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
