"""What the Redis checkpoint promises beyond the contract (``test_frontier_contract`` runs that):
its keys share one hash tag, its counts cannot drift, even with owners racing, its times are the
server's, a damaged crawl is refused in one line, and its seen-set fits in 24 bytes per URL.

These tests look at the server with a client of their own, through the key names the backend
documents (``CrawlKeys``); only a test on a server of its own lists keys (SCAN), to prove that
the crawl made no key outside them.
"""

from __future__ import annotations

import math
import pickle
import random
import threading
import time
from collections import Counter

import pytest
import redis
from redis.crc import key_slot

from helpers import lease_from

from crawler.exceptions import CheckpointError
from crawler.frontier import Completion, Entry, Frontier, FrontierCounts, Lease
from crawler.frontier.base import Limits
from crawler.frontier.redis import CheckpointUnavailable, RedisBackend
from crawler.frontier.redis_keys import BUCKETS, RECORD_SIZE, SpiderKeys
from crawler.items import RejectedItem
from crawler.request import Request

from redis_server import RedisServer


SPIDER = "books"


def entries(*paths: str, host: str = "example.test", **options: object) -> list[Entry]:
    return [Entry.of(SPIDER, Request(f"http://{host}{path}", **options), 0) for path in paths]  # type: ignore[arg-type]


def spider_keys(backend: RedisBackend, client: redis.Redis, spider: str = SPIDER) -> SpiderKeys:
    return backend.keys.spider(int(client.hget(backend.keys.spiders, spider)))


def true_counts(client: redis.Redis, keys: SpiderKeys) -> FrontierCounts:
    """The counts as the structures themselves tell them, checking that those agree."""
    ready = {host.decode(): int(number) for host, number in client.hgetall(keys.prefix + "ready").items()}
    queues = {host: client.zcard(keys.queue(host)) for host in ready}
    assert queues == ready, "a host's ready count differs from its queue"
    queued = sum(queues.values()) + client.zcard(keys.prefix + "delayed")
    in_flight = client.hlen(keys.leases)
    assert client.zcard(keys.prefix + "expiry") == in_flight, "a lease without a deadline, or the reverse"
    failed = client.zcard(keys.prefix + "failed")
    assert client.hlen(keys.prefix + "entries") == queued + in_flight + failed, "an entry in no state, or in two"
    with client.pipeline(transaction=False) as pipe:
        for bucket in keys.buckets():
            pipe.strlen(bucket)
        seen = sum(pipe.execute()) // RECORD_SIZE
    # Every request ever queued is in the seen-set once; those no longer queued, leased or
    # failed are done or refused.
    finished = seen - queued - in_flight - failed
    counted = _counts_hash(client, keys)
    assert counted["done"] + counted["refused"] == finished, "done and refused do not add up to the seen-set"
    return FrontierCounts(
        queued=queued, in_flight=in_flight, done=counted["done"], failed=failed,
        items=client.xlen(keys.items), rejected=client.xlen(keys.rejected), refused=counted["refused"],
    )


def _counts_hash(client: redis.Redis, keys: SpiderKeys) -> Counter[str]:
    return Counter({name.decode(): int(value) for name, value in client.hgetall(keys.counts).items()})


# -- key layout -----------------------------------------------------------------------------------


def small_crawl(frontier: Frontier) -> None:
    """Something in every structure: done with items, rejects and children, failed, deferred,
    leased, queued on two hosts, and state."""
    frontier.add(entries("/list", "/broken", "/later", "/held") + entries("/other", host="other.test:8080"))
    leases = {lease.request.url.rsplit("/", 1)[1]: lease for lease in frontier.lease({"example.test": 4})}
    frontier.complete(
        [
            Completion(
                leases["list"], 1, children=entries("/item/1", "/item/2"), items=['{"n":1}'],
                rejected=[RejectedItem("http://example.test/list", "price: missing", "{}")],
            ),
            Completion(leases["broken"], 3, "HTTP 503", "HTTPStatusError", status=503),
            Completion(leases["later"], 1, "HTTP 429", "HTTPStatusError", retry_at=time.time() + 3600, status=429),
        ]
    )
    frontier.set_state("export", "1")


def test_every_key_of_a_crawl_carries_its_hash_tag_and_discard_leaves_none(own_redis_server: RedisServer) -> None:
    backend = RedisBackend(own_redis_server.url, "shop")
    with backend.open("crawl:1") as store:
        store.claim_spider_set([SPIDER, "films"])
        small_crawl(store.frontier(SPIDER))
        store.frontier("films").add(entries("/a"))

    with own_redis_server.client() as client:
        keys = [key.decode() for key in client.scan_iter(count=1000)]  # a server of this test's own
        assert keys and all(key.startswith("{shop}:") for key in keys)
        assert {key_slot(key.encode()) for key in keys} == {key_slot(b"{shop}")}  # one Redis Cluster slot
        documented = {*backend.keys.fixed, backend.keys.hosts}
        for spider in (SPIDER, "films"):
            layout = spider_keys(backend, client, spider)
            documented.update(layout.fixed, (bucket.decode() for bucket in layout.buckets()))
            documented.update(layout.queue(host.decode()) for host in client.hkeys(layout.prefix + "ready"))
        assert set(keys) <= documented  # no key outside the layout, which reset and discard delete

        backend.discard()
        assert client.dbsize() == 0


def test_status_reads_without_writing(own_redis_server: RedisServer) -> None:
    backend = RedisBackend(own_redis_server.url, "shop")
    with pytest.raises(CheckpointError, match="no checkpoint yet"):
        backend.status({})
    with backend.open("crawl:1") as store:
        small_crawl(store.frontier(SPIDER))
        with own_redis_server.client() as client:
            before = {key: client.dump(key) for key in client.scan_iter(count=1000)}
            (status,) = backend.status({SPIDER: Limits()}).spiders
            assert {key: client.dump(key) for key in client.scan_iter(count=1000)} == before

    assert status.counts == FrontierCounts(queued=4, in_flight=1, done=1, failed=1, items=1, rejected=1)
    assert (status.failed_kinds, status.failed_statuses) == ({"HTTPStatusError": 1}, {503: 1})
    assert status.in_flight_owners == {"crawl:1": 1}


def test_reset_deletes_the_spiders_keys_and_keeps_its_ids_going(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, redis_server.new_crawl())
    with backend.open("crawl:1") as store, redis_server.client() as client:
        frontier = store.frontier(SPIDER)
        small_crawl(frontier)
        keys = spider_keys(backend, client)
        first = max(lease.entry for lease in lease_from(frontier, 10))
        store.reset(SPIDER)
        assert [key for key in keys.fixed if client.exists(key)] == [keys.prefix + "seq"]
        buckets = keys.buckets()
        assert not any(client.exists(*buckets[start : start + 1000]) for start in range(0, BUCKETS, 1000))
        fresh = store.frontier(SPIDER)
        assert fresh.add(entries("/list")) == 1
        # Ids go on: a lease of the old crawl held elsewhere can never pass for one of the new.
        (lease,) = lease_from(fresh, 1)
        assert lease.entry > first
    backend.discard()


# -- counts ---------------------------------------------------------------------------------------


def test_counts_equal_the_structures_after_a_random_mix_of_steps(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, redis_server.new_crawl())
    chance = random.Random(20240601)
    paths = [f"/{n}" for n in range(60)]
    hosts = ["a.test", "b.test", "c.test:8080"]
    with backend.open("crawl:1", lease_time=0.05) as store, redis_server.client() as client:
        frontier = store.frontier(SPIDER)
        held: list[Lease] = []
        for _ in range(300):
            step = chance.choice(["add", "lease", "complete", "release", "renew", "reclaim", "retry_failed"])
            if step == "add":
                frontier.add(entries(*chance.sample(paths, 5), host=chance.choice(hosts)))
            elif step == "lease":
                held += frontier.lease({host: chance.randint(0, 3) for host in frontier.ready_hosts()})
            elif step == "complete" and held:
                batch = [held.pop(chance.randrange(len(held))) for _ in range(min(len(held), 3))]
                frontier.complete([random_outcome(chance, lease, paths, hosts) for lease in batch])
            elif step == "release" and held:
                frontier.release([held.pop()])
            elif step == "renew":
                frontier.renew(held)
            elif step == "reclaim":
                time.sleep(0.06 * chance.random())
                frontier.reclaim_expired()
            elif step == "retry_failed":
                frontier.retry_failed(statuses=chance.choice([(), (503,)]))
        assert frontier.counts() == true_counts(client, spider_keys(backend, client))
    backend.discard()


def random_outcome(chance: random.Random, lease: Lease, paths: list[str], hosts: list[str]) -> Completion:
    outcome = chance.choice(["done", "failed", "retry", "later", "refused"])
    if outcome == "done":
        children = entries(*chance.sample(paths, 3), host=chance.choice(hosts))
        items = ['{"n":1}'] * chance.randint(0, 2)
        rejected = [RejectedItem(lease.request.url, "bad", "{}")] * chance.randint(0, 1)
        return Completion(lease, 1, children=children, items=items, rejected=rejected)
    if outcome == "failed":
        return Completion(lease, 2, "HTTP 503", "HTTPStatusError", status=503)
    if outcome in ("retry", "later"):
        return Completion(lease, 1, "timed out", "ReadTimeout", retry_at=time.time() + (0.02 if outcome == "later" else 0))
    return Completion(lease, 0, "disallowed by robots.txt", "RobotsDisallowed", refused=True)


def test_racing_owners_commit_every_request_exactly_once(redis_server: RedisServer) -> None:
    """Owners, each with its own connection, lease, complete, release, stall past their
    deadlines and reclaim each other's leases at once; children overlap across owners."""
    backend = RedisBackend(redis_server.url, redis_server.new_crawl())
    pages = 240
    with backend.open("seed") as store:
        store.frontier(SPIDER).add(page_entries(range(0, pages, 10)))
    failures: list[BaseException] = []
    races: Counter[str] = Counter()

    def work(number: int) -> None:
        chance = random.Random(number)
        try:
            with backend.open(f"owner:{number}", lease_time=0.15) as store:
                races.update(crawl_until_finished(store.frontier(SPIDER), chance, pages))
        except BaseException as error:  # handed to the test thread, which fails with it
            failures.append(error)

    workers = [threading.Thread(target=work, args=(number,)) for number in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not failures, failures
    assert not any(worker.is_alive() for worker in workers)
    assert races["reclaimed"] and races["stale"]  # the owners did race

    with backend.open("check") as store, redis_server.client() as client:
        frontier = store.frontier(SPIDER)
        committed = Counter(item.data for item in frontier.items_after(0, 10 * pages))
        assert committed == Counter({f'"{n}"': 1 for n in range(pages)})
        assert frontier.counts() == FrontierCounts(done=pages, items=pages)
        assert frontier.counts() == true_counts(client, spider_keys(backend, client))
    backend.discard()


def page_entries(numbers: range | list[int]) -> list[Entry]:
    return [Entry.of(SPIDER, Request(f"http://h{n % 3}.test/{n}"), 0) for n in numbers]


def crawl_until_finished(frontier: Frontier, chance: random.Random, pages: int) -> Counter[str]:
    """Work until the crawl is finished; how many leases this owner reclaimed, and how many of
    its completions and releases were refused as stale."""
    races: Counter[str] = Counter()
    deadline = time.monotonic() + 30
    while not frontier.is_finished():
        assert time.monotonic() < deadline, "the crawl did not finish"
        races["reclaimed"] += frontier.reclaim_expired()
        leases = frontier.lease({host: chance.randint(1, 4) for host in frontier.ready_hosts()})
        if not leases:
            time.sleep(0.005)
            continue
        completions, released = [], []
        for lease in leases:
            fate = chance.random()
            if fate < 0.1:
                released.append(lease)
            elif fate < 0.2:
                completions.append(Completion(lease, 1, "timed out", "ReadTimeout", retry_at=0.0))
            else:
                number = int(lease.request.url.rsplit("/", 1)[1])
                children = page_entries(chance.sample(range(pages), 4) + [(number + 1) % pages])
                completions.append(Completion(lease, 1, children=children, items=[f'"{number}"']))
        if chance.random() < 0.15:
            time.sleep(0.2)  # past the deadline: another owner may take these over, and this commit is refused
        else:
            frontier.renew(leases)
        races["stale"] += frontier.release(released) + frontier.complete(completions).stale
    return races


# -- time -----------------------------------------------------------------------------------------


def test_deadlines_and_retry_times_are_the_servers(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client whose clock is a day ahead still gets leases of the lease time, and a retry
    waits the delay it meant, both on the server's clock."""
    day = 86_400.0
    real_time = time.time
    monkeypatch.setattr("crawler.frontier.redis.time.time", lambda: real_time() + day)
    backend = RedisBackend(redis_server.url, redis_server.new_crawl())
    with backend.open("crawl:1", lease_time=30.0) as store, redis_server.client() as client:
        frontier = store.frontier(SPIDER)
        frontier.add(entries("/a", "/b"))
        first, second = lease_from(frontier, 2)
        keys = spider_keys(backend, client)
        seconds, microseconds = client.time()
        server_now = seconds + microseconds / 1e6
        deadline = client.zscore(keys.prefix + "expiry", f"{first.entry:012d}") / 1e6
        assert deadline - server_now == pytest.approx(30.0, abs=1.0)

        frontier.complete([Completion(first, 1, "HTTP 503", "HTTPStatusError", retry_at=time.time() + 60, status=503)])
        due = client.zscore(keys.prefix + "delayed", f"{first.entry:012d}") / 1e6
        assert due - server_now == pytest.approx(60.0, abs=1.0)
        frontier.complete([Completion(second, 1)])
        last_activity = float(client.hget(keys.state, "last_activity"))
        assert last_activity == pytest.approx(server_now, abs=1.0)
    backend.discard()


# -- owners ---------------------------------------------------------------------------------------


def test_a_restarted_owner_takes_back_its_leases_at_once_and_others_wait(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, redis_server.new_crawl())
    crashed = backend.open("host-a:1")
    frontier = crashed.frontier(SPIDER)
    frontier.add(entries("/a", "/b", "/c"))
    held = lease_from(frontier, 2)
    crashed.client.close()  # killed: its store is never closed, so it still counts as alive

    with backend.open("host-b:7") as other:
        # Another owner cannot know the first is gone: its leases wait for their deadline.
        assert other.frontier(SPIDER).resume.reclaimed == 0
        with backend.open("host-a:1") as restarted:
            again = restarted.frontier(SPIDER)
            assert again.resume.reclaimed == 2
            assert again.resume.counts == FrontierCounts(queued=3)
            assert [lease.request for lease in lease_from(again, 5)] == [lease.request for lease in held] + [
                Request("http://example.test/c")
            ]
    backend.discard()


def test_owners_share_a_crawl_at_once(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, redis_server.new_crawl())
    with backend.open("one:1") as one, backend.open("two:2") as two:
        first, second = one.frontier(SPIDER), two.frontier(SPIDER)
        first.add(entries("/a", "/b"))
        assert second.add(entries("/b", "/c")) == 1  # one seen-set
        mine, theirs = lease_from(first, 1), lease_from(second, 1)
        assert {lease.request.url for lease in mine + theirs} == {"http://example.test/a", "http://example.test/b"}
        assert second.complete([Completion(mine[0], 1)]).stale == 1  # a lease is its owner's alone
        assert backend.status({}).running == "one:1, two:2"
    backend.discard()


# -- damage, connection, secrets ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "damage", "message"),
    [
        ("schema", lambda client, key: client.hset(key, "x", "1"), "holds a hash, not a string"),
        ("schema", lambda client, key: client.set(key, "99"), "schema 99 is newer"),
        ("schema", lambda client, key: client.set(key, "hello"), "unknown checkpoint schema hello"),
        ("spiders", lambda client, key: client.rpush(key, "x"), "holds a list, not a hash"),
    ],
)
def test_a_damaged_crawl_is_refused_on_open_in_one_line(redis_server: RedisServer, key, damage, message) -> None:
    backend = RedisBackend(redis_server.url, redis_server.new_crawl())
    with backend.open("crawl:1") as store:
        store.frontier(SPIDER).add(entries("/a"))
    with redis_server.client() as client:
        full_key = getattr(backend.keys, key)
        client.delete(full_key)
        damage(client, full_key)
    with pytest.raises(CheckpointError, match=message) as refused:
        with backend.open("crawl:2") as store:
            store.frontier(SPIDER)
    assert "\n" not in str(refused.value) and backend.location in str(refused.value)
    backend.discard()
    with redis_server.client() as client:
        assert not client.exists(*backend.keys.fixed)


def test_a_foreign_key_fails_the_step_and_writes_nothing_of_it(redis_server: RedisServer) -> None:
    backend = RedisBackend(redis_server.url, redis_server.new_crawl())
    with backend.open("crawl:1") as store, redis_server.client() as client:
        frontier = store.frontier(SPIDER)
        keys = spider_keys(backend, client)
        client.set(keys.queue("other.test"), "not a queue")
        batch = entries("/a") + entries("/b", host="other.test")
        with pytest.raises(CheckpointError, match="holds a string, not a zset"):
            frontier.add(batch)
        assert frontier.counts() == FrontierCounts()
        client.delete(keys.queue("other.test"))
        assert frontier.add(batch) == 2  # neither was marked as seen

        (queued,) = client.zrange(keys.queue("other.test"), 0, 0)
        record = client.hget(keys.prefix + "entries", queued)
        client.hset(keys.prefix + "entries", queued, b"\xc1 not msgpack")
        with pytest.raises(CheckpointError, match="is damaged"):
            frontier.lease({"example.test": 1, "other.test": 1})
        client.hset(keys.prefix + "entries", queued, record)
        assert frontier.counts() == true_counts(client, keys) == FrontierCounts(queued=2)  # /a was not leased either
        assert len(frontier.lease({"example.test": 1, "other.test": 1})) == 2
        client.hset(keys.counts, "queued", "many")
        with pytest.raises(CheckpointError, match="not a number"):
            frontier.counts()
    backend.discard()


def test_an_unreachable_server_is_checkpoint_unavailable(own_redis_server: RedisServer) -> None:
    backend = RedisBackend(own_redis_server.url, "shop")
    own_redis_server.stop()
    with pytest.raises(CheckpointUnavailable, match="cannot reach the checkpoint server") as unavailable:
        backend.open("crawl:1")
    copy = pickle.loads(pickle.dumps(unavailable.value))  # errors cross process boundaries
    assert isinstance(copy, CheckpointError) and str(copy) == str(unavailable.value)


def test_the_password_is_given_apart_and_never_shown_or_stored(own_redis_server: RedisServer) -> None:
    secret, wrong = "s3cret-pass", "not-the-pass"
    with own_redis_server.client() as client:
        client.config_set("requirepass", secret)
    with pytest.raises(CheckpointError, match="the URL holds a password") as in_url:
        RedisBackend(f"redis://:{secret}@127.0.0.1:{own_redis_server.port}/0", "shop")
    assert secret not in str(in_url.value)
    with pytest.raises(CheckpointError, match="refused the password") as refused:
        RedisBackend(own_redis_server.url, "shop", password=wrong).open("crawl:1")
    assert wrong not in str(refused.value)

    backend = RedisBackend(own_redis_server.url, "shop", password=secret)
    with backend.open("crawl:1") as store:
        small_crawl(store.frontier(SPIDER))
        assert store.location == backend.location == own_redis_server.url
    with backend.connect() as client:
        assert not any(secret.encode() in client.dump(key) for key in client.scan_iter(count=1000))


# -- memory ---------------------------------------------------------------------------------------

MEMORY_TARGET = 24  # bytes per URL in the server's memory for the seen-set, at 1,000,000 URLs
DESIGN_SCALE = 1_000_000


def test_the_seen_set_costs_at_most_24_bytes_per_url_at_a_million(redis_server: RedisServer) -> None:
    """20,000 URLs, measured as they would sit among 1,000,000.

    Honest at this scale: 20,000 fingerprints spread over all 65,536 buckets leave most buckets
    with one record, and each bucket's own cost (key, object, allocator rounding: about 90 bytes)
    then dominates, at about 90 bytes per URL. What a million URLs cost per URL is what a bucket
    holding about 15 of them costs per record: so these URLs' fingerprints are drawn into the
    20,000/1,000,000 share of the buckets that gives each one as many records as a million give,
    and their MEMORY USAGE (records, key, object and rounding; not the server's table slot, 8 or
    16 bytes per bucket) is measured. ``bench/redis_memory.py`` measures a real million.
    """
    urls = 20_000
    used_buckets = math.ceil(BUCKETS * urls / DESIGN_SCALE)
    chance = random.Random(7)
    backend = RedisBackend(redis_server.url, redis_server.new_crawl())
    with backend.open("crawl:1") as store, redis_server.client() as client:
        frontier = store.frontier(SPIDER)
        for start in range(0, urls, 2000):
            batch = [
                Entry(chance.randrange(used_buckets).to_bytes(2, "big") + chance.randbytes(14), "example.test", 0, 0, f'{{"url":"/{n}"}}')
                for n in range(start, start + 2000)
            ]
            assert frontier.add(batch) == len(batch)
        buckets = spider_keys(backend, client).buckets()[:used_buckets]
        with client.pipeline(transaction=False) as pipe:
            for bucket in buckets:
                pipe.memory_usage(bucket, samples=0).strlen(bucket)
            measured = pipe.execute()
        usage, records = sum(measured[::2]), sum(measured[1::2])
        assert records == RECORD_SIZE * urls  # every fingerprint kept whole: 2 bytes in its bucket's name, 14 in it
        assert usage / urls <= MEMORY_TARGET, f"{usage / urls:.1f} bytes per URL"
    backend.discard()
