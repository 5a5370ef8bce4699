"""The commands of ``crawler`` (run, check, list, status, retry-failed, rejected, export, fetch,
parse), once the entry point
in ``crawler.cli`` has made it safe to be interrupted: what they print, and the exit code each
outcome gets (see ``crawler.cli`` for the codes)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.logging import RichHandler

from . import __version__
from .cli import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REQUESTS_FAILED,
    EXIT_STORAGE,
    STOPPED,
    __doc__ as cli_doc,
)
from .config import Config, load_config
from .exceptions import CheckpointError, CheckpointWriteFailed, ConfigError, CrawlerError, LoginFailed, OutputError
from .runner.auth import check_secrets, environment
from .callbacks import missing_callbacks
from .exporters import make_format
from .loader import load_spiders
from .overrides import overridden, setting_overrides, spider_arguments
from .sinks.base import SinkError

if TYPE_CHECKING:
    from .runner import RunReport



def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crawler", description=(cli_doc or "").splitlines()[0])
    parser.add_argument("--version", action="version", version=f"crawler {__version__}")
    # What every command that reads a config takes; run and check also take the spiders' -a and -o.
    settings = argparse.ArgumentParser(add_help=False)
    settings.add_argument("-s", "--set", dest="settings", action="append", default=[], metavar="SECTION.KEY=VALUE",
                          help="set a config key for this command, as the file would (repeatable): -s crawl.workers=4")
    spider_options = argparse.ArgumentParser(add_help=False, parents=[settings])
    spider_options.add_argument("-a", dest="arguments", action="append", default=[], metavar="NAME=VALUE",
                                help="a spider argument, over the config's args (repeatable)")
    spider_options.add_argument("-o", "--output", metavar="PATH",
                                help="write items to PATH ({spider} and {format} are filled in; .csv or .jsonl "
                                     "picks the format); - writes JSON Lines to standard output")
    # What every command that fetches takes.
    cached = argparse.ArgumentParser(add_help=False)
    cached.add_argument("--cache", action="store_true",
                        help="answer from the HTTP cache, and keep what is fetched in it (http_cache.enabled)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    new = commands.add_parser("new", help="make a project that crawls the practice site at once")
    new.add_argument("folder", type=Path, metavar="DIR")
    genspider = commands.add_parser("genspider", help="add a spider for a site to the project in this folder")
    genspider.add_argument("name", metavar="NAME")
    genspider.add_argument("url", metavar="URL", help="where it starts")
    run = commands.add_parser("run", help="crawl (or resume the crawl) a config describes",
                              parents=[spider_options, cached])
    run.add_argument("config", type=Path, metavar="CONFIG")
    run.add_argument("--spider", metavar="NAME", help="run only this spider")
    run.add_argument("--fresh", action="store_true", help="forget the checkpoint and start over")
    run.add_argument("-v", "--verbose", action="store_true", help="log every failure and retry")
    run.add_argument("--processes", type=int, metavar="N",
                     help="fetch and parse in N processes (crawl.processes), to use N cores")
    run.add_argument("--progress-every", type=float, default=10.0, metavar="SECONDS",
                     help="where standard error is not a terminal, a progress line this often (default 10)")
    run.add_argument("--stats-file", type=Path, metavar="PATH",
                     help="write what the run did, and where the crawl stands, to PATH as JSON")
    check = commands.add_parser("check", help="validate a config without crawling", parents=[spider_options])
    check.add_argument("config", type=Path, metavar="CONFIG")
    listing = commands.add_parser("list", help="list the spiders a config would run", parents=[settings])
    listing.add_argument("config", type=Path, metavar="CONFIG")
    status = commands.add_parser("status", help="show where the crawl stands, from its checkpoint", parents=[settings])
    status.add_argument("config", type=Path, metavar="CONFIG")
    status.add_argument("--json", action="store_true", help="print it as JSON (schema in the README)")
    retry = commands.add_parser("retry-failed", help="queue requests that ran out of retries again", parents=[settings])
    retry.add_argument("config", type=Path, metavar="CONFIG")
    retry.add_argument("--spider", metavar="NAME", help="only this spider's failed requests")
    retry.add_argument("--status", type=int, action="append", default=[], metavar="CODE",
                       help="only those that failed with this HTTP status (repeatable)")
    retry.add_argument("--kind", action="append", default=[], metavar="KIND",
                       help="only those that failed with this error kind, e.g. ReadTimeout, "
                            "ConnectError, CallbackError (repeatable)")
    fetch = commands.add_parser(
        "fetch", help="fetch one URL through the crawl's machinery (login, tokens, robots.txt, retries) and print it",
        parents=[settings, cached],
    )
    fetch.add_argument("url", metavar="URL", help="{practice_site} stands for the practice site the config serves")
    fetch.add_argument("config", type=Path, nargs="?", metavar="CONFIG", help="whose spider's login and tokens to use")
    fetch.add_argument("--spider", metavar="NAME", help="the config's spider to fetch as (default: its first)")
    fetch.add_argument("--headers", action="store_true", help="print the status line and headers, not the body")
    shell = commands.add_parser(
        "shell", help="fetch one URL and open a Python console with the response, to try selectors on",
        parents=[settings, cached],
    )
    shell.add_argument("url", metavar="URL", help="{practice_site} stands for the practice site the config serves")
    shell.add_argument("config", type=Path, nargs="?", metavar="CONFIG", help="whose spider's login and tokens to use")
    shell.add_argument("--spider", metavar="NAME", help="the config's spider to fetch as (default: its first)")
    parse = commands.add_parser(
        "parse", help="fetch one URL and run a spider's callback on it: the requests and items it yields",
        parents=[settings, cached],
    )
    parse.add_argument("url", metavar="URL", help="{practice_site} stands for the practice site the config serves")
    parse.add_argument("config", type=Path, metavar="CONFIG")
    parse.add_argument("--spider", metavar="NAME", help="the spider (default: the config's first)")
    parse.add_argument("--callback", metavar="NAME", default="parse", help="the callback to run (default: parse)")
    rejected = commands.add_parser(
        "rejected", help="list the items that failed validation: their pages, errors and data", parents=[settings]
    )
    rejected.add_argument("config", type=Path, metavar="CONFIG")
    rejected.add_argument("--spider", metavar="NAME", help="only this spider's")
    rejected.add_argument("--limit", type=int, default=100, metavar="N", help="at most N per spider (default 100)")
    rejected.add_argument("--json", action="store_true", help="one JSON object per line")
    export = commands.add_parser(
        "export", help="write the output files from the checkpoint, on this machine", parents=[spider_options]
    )
    export.add_argument("config", type=Path, metavar="CONFIG")
    export.add_argument("--spider", metavar="NAME", help="only this spider's file")
    return parser


def _overridden(config: Config, args: argparse.Namespace) -> Config:
    """The config with what the command line sets laid over it, validated like the file."""
    sections = setting_overrides(args.settings)
    if getattr(args, "cache", False):
        sections["http_cache"] = {**sections.get("http_cache", {}), "enabled": True}
    return overridden(
        config, sections, output=getattr(args, "output", None),
        arguments=spider_arguments(getattr(args, "arguments", [])), spider=getattr(args, "spider", None),
        source="the command line",
    )


def _configure_logging(console: Console, verbose: bool) -> None:
    handler = RichHandler(console=console, show_path=False, show_time=False, markup=False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler], format="%(message)s")
    # Our own per-request warnings are summarised at the end; urllib3's would repeat them.
    logging.getLogger("urllib3").setLevel(logging.ERROR)


def _check(config: Config, path: Path, out: Console) -> int:
    from .runner.items import check_sinks, load_pipelines

    by_index = load_spiders(config)
    spiders = list(by_index.values())
    for index, spider in by_index.items():
        make_format(config.output, spider)  # the CSV columns a spider's items get
        load_pipelines(config, index)
    if missing := [str(problem) for spider in spiders for problem in missing_callbacks(type(spider))]:
        raise ConfigError(missing)
    demo_account = None
    if config.practice_site.serve:  # its demo account stands in for unset credentials
        from .practice import PracticeSite

        demo_account = PracticeSite().demo_credentials
    environ = environment(config, demo_account)
    check_secrets(config, environ)
    for index in by_index:
        check_sinks(config, index, environ)
    out.print(f"{path}: OK ({len(spiders)} spider{'s' if len(spiders) != 1 else ''}: "
              f"{', '.join(spider.name for spider in spiders)})")
    return EXIT_OK


def _list(config: Config, out: Console) -> int:
    for index, spider in load_spiders(config).items():
        entry = config.spiders[index]
        cls = type(spider)
        args = f"  args: {entry.args}" if entry.args else ""
        out.print(f"{spider.name}  ({cls.__module__}:{cls.__qualname__}){args}")
    return EXIT_OK


def _status(config: Config, args: argparse.Namespace, out: Console) -> int:
    from .progress import print_status
    from .runner import backend_of, limits_of

    limits = {spider.name: limits_of(config.spiders[index]) for index, spider in load_spiders(config).items()}
    status = backend_of(config).status(limits)
    if args.json:
        from .reports import status_document

        print(json.dumps(status_document(status), indent=2, sort_keys=True))
    else:
        print_status(out, status)
    return EXIT_OK


def _retry_failed(config: Config, args: argparse.Namespace, out: Console) -> int:
    from .runner import open_checkpoint

    names = [spider.name for spider in load_spiders(config, args.spider).values()]
    with open_checkpoint(config) as checkpoint:
        for name in names:
            requeued = checkpoint.frontier(name).retry_failed(args.status, args.kind)
            out.print(f"{name}: {requeued} failed request{'s' if requeued != 1 else ''} queued again")
    out.print(f"Run `crawler run {args.config}` to fetch them.")
    return EXIT_OK


def _new(args: argparse.Namespace, out: Console) -> int:
    from .scaffold import new_project

    written = new_project(args.folder)
    out.print(f"{args.folder}: a project of {len(written)} files. Next:")
    steps = (
        (f"cd {args.folder} && crawler run config.toml", "crawls the practice site into output/"),
        ("python -m pytest", "the example spider's test"),
        ("crawler genspider NAME URL", "a spider for your site"),
    )
    width = max(len(command) for command, _ in steps) + 2
    for command, what in steps:
        out.print(f"  {command.ljust(width)}# {what}")
    return EXIT_OK


def _genspider(args: argparse.Namespace, out: Console) -> int:
    from .scaffold import new_spider

    path = new_spider(args.name, args.url, Path.cwd())
    named = " and named it in config.toml" if (Path.cwd() / "config.toml").exists() else ""
    out.print(f"wrote {path}{named}: `crawler parse {args.url} config.toml --spider {args.name}` tries it on its first page")
    return EXIT_OK


def _fetch(config: Config, args: argparse.Namespace, out: Console) -> int:
    from .runner.pages import page_fetcher

    with page_fetcher(config, args.spider) as pages:
        response = pages.fetch(args.url)
    if args.headers:
        print(f"{response.status} {response.url}")
        for name, value in response.headers.items():
            print(f"{name}: {value}")
    else:
        sys.stdout.buffer.write(response.body)
        sys.stdout.buffer.flush()
    return EXIT_OK


def _shell(config: Config, args: argparse.Namespace) -> int:
    from .runner.pages import page_fetcher

    with page_fetcher(config, args.spider) as pages:
        namespace: dict[str, object] = {"spider": pages.spider}

        def fetch(url: str) -> object:
            """Fetch ``url`` as the first page was, and make it ``response``."""
            namespace["response"] = pages.fetch(url)
            namespace["request"] = namespace["response"].request  # type: ignore[attr-defined]
            return namespace["response"]

        namespace["fetch"] = fetch
        fetch(args.url)
        banner = (
            f"crawler shell: response = {namespace['response']!r}, request, spider ({pages.spider.name}), "
            "fetch(url). Try response.css('title::text').get(). Ctrl-D leaves."
        )
        try:
            from IPython import start_ipython
        except ImportError:
            import code

            code.interact(banner=banner, local=namespace, exitmsg="")
        else:
            print(banner)
            start_ipython(argv=[], user_ns=namespace)
    return EXIT_OK


def _parse(config: Config, args: argparse.Namespace, out: Console) -> int:
    from .content import accepted_by
    from .runner.pages import page_fetcher
    from .testing import run_callback

    with page_fetcher(config, args.spider) as pages:
        callback = getattr(pages.spider, args.callback, None)
        if not callable(callback):
            raise ConfigError([f"--callback: spider {pages.spider.name} has no callback {args.callback!r}"])
        response = pages.fetch(args.url, accept=accepted_by(callback))
        if response.status >= 400 and response.status not in pages.spider.handle_statuses:
            raise CrawlerError(f"{response.url}: HTTP {response.status}; a crawl counts it failed and runs no callback")
        result = run_callback(pages.spider, callback, response)
    out.print(f"{pages.spider.name}.{args.callback} on {response.url} (HTTP {response.status}):")
    out.print(f"items: {len(result.items)}")
    for item in result.items:
        out.print("  " + json.dumps(item, ensure_ascii=False))
    out.print(f"rejected items: {len(result.rejected)}")
    for rejected in result.rejected:
        out.print(f"  {rejected.error}\n    {rejected.data}")
    out.print(f"requests: {len(result.requests)}")
    for request in result.requests:
        out.print(f"  {request.url}  -> {request.callback or 'parse'}")
    for reason, count in sorted(result.dropped.items()):
        out.print(f"dropped {count}: {reason}")
    return EXIT_OK


def _rejected(config: Config, args: argparse.Namespace, out: Console) -> int:
    from .runner import open_checkpoint

    names = [spider.name for spider in load_spiders(config, args.spider).values()]
    with open_checkpoint(config) as checkpoint:
        for name in names:
            frontier = checkpoint.frontier(name)
            rejected = frontier.rejected(args.limit)
            if args.json:
                for item in rejected:
                    print(json.dumps({"spider": name, "url": item.url, "error": item.error, "data": json.loads(item.data)}))
                continue
            total = frontier.counts().rejected
            shown = f" (the first {len(rejected)})" if len(rejected) < total else ""
            out.print(f"{name}: {total} rejected item{'s' if total != 1 else ''}{shown}")
            for item in rejected:
                out.print(f"  {item.url}\n    {item.error}\n    {item.data}")
    return EXIT_OK


def _export(config: Config, args: argparse.Namespace, out: Console) -> int:
    from .runner import export_outputs

    for exported in export_outputs(config, args.spider):
        if exported.busy:
            out.print(f"{exported.spider}: {exported.path} is being written by a crawl on this machine; it keeps it up to date")
        else:
            out.print(f"{exported.spider}: {exported.path} is up to date ({exported.written} item{'s' if exported.written != 1 else ''} added)")
    return EXIT_OK


def _run(config: Config, args: argparse.Namespace, out: Console, err: Console) -> int:
    from .progress import TerminalReporter, print_summary
    from .runner import run_crawl

    _configure_logging(err, args.verbose)
    if args.processes is not None:
        config = config.with_overrides({"crawl": {"processes": args.processes}}, "--processes")
    to_stdout = config.output.path == "-"
    # Standard output is the items' (-o -): the summary goes where the progress went.
    summary = err if to_stdout else out

    def summarize(report: RunReport) -> None:
        outputs = {
            result.spider: "standard output" if to_stdout else str(config.output_path(result.spider))
            for result in report.results
        }
        if report.results and not all(result.already_finished for result in report.results):
            print_summary(summary, report, outputs)

    try:
        report = run_crawl(
            config, only=args.spider, fresh=args.fresh, reporter=TerminalReporter(err, every=args.progress_every)
        )
    except CrawlerError as error:
        # What the spiders did before the crawl stopped is still theirs to see (the one whose
        # login failed, and the others); run_command says why it stopped, with its exit code.
        if error.report is not None:
            summarize(error.report)
            if args.stats_file is not None:
                _write_stats(args.stats_file, error.report, exit_code(error))
        raise
    summarize(report)
    code = _verdict(report, args, err)
    if args.stats_file is not None:
        _write_stats(args.stats_file, report, code)
    return code


def _write_stats(path: Path, report: RunReport, code: int) -> None:
    from .reports import run_document, write_json

    write_json(path, run_document(report, code))


def _verdict(report: RunReport, args: argparse.Namespace, err: Console) -> int:
    """The run's exit code, and the line that says why when it is not 0."""
    if report.interrupted:
        command = " ".join(["crawler", "run", str(args.config)] + (["--spider", args.spider] if args.spider else []))
        err.print(f"Stopped. The checkpoint is saved: run `{command}` to continue.")
        return EXIT_INTERRUPTED
    failed, internal = report.whole_crawl.failed, report.failed_kinds.get("InternalError", 0)
    if internal:
        err.print(
            f"crawler: {internal} request{'s' if internal != 1 else ''} failed on an internal error, a bug in "
            "crawler: please report it with the traceback logged above. "
            f"`crawler retry-failed {args.config} --kind InternalError` queues them again."
        )
        return EXIT_FAILED
    if failed:
        err.print(
            f"Finished, but {failed} request{'s' if failed != 1 else ''} failed: `crawler status {args.config}` "
            f"shows them by kind, `crawler retry-failed {args.config}` queues them again."
        )
        return EXIT_REQUESTS_FAILED
    return EXIT_OK


def exit_code(error: CrawlerError) -> int:
    """The exit code of a command stopped by ``error``."""
    if isinstance(error, ConfigError):
        return EXIT_CONFIG
    if isinstance(error, (CheckpointError, OutputError)):
        return EXIT_STORAGE
    return EXIT_FAILED


def run_command(argv: list[str] | None = None) -> int:
    """Parse ``argv``, run the command, and return its exit code."""
    args = _parser().parse_args(argv)
    # soft_wrap: long lines (paths, resume commands) stay whole when output goes to a file or pipe.
    # markup=False: spider names, args and paths are the user's text, shown as written.
    out = Console(highlight=False, soft_wrap=True, markup=False)
    err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)
    try:
        if args.command == "new":
            return _new(args, out)
        if args.command == "genspider":
            return _genspider(args, out)
        if args.command in ("fetch", "shell") and args.config is None:
            from .runner.pages import bare_config

            config = _overridden(bare_config(), args)
        else:
            config = _overridden(load_config(args.config), args)
        commands: dict[str, Callable[[], int]] = {
            "check": lambda: _check(config, args.config, out),
            "list": lambda: _list(config, out),
            "status": lambda: _status(config, args, out),
            "retry-failed": lambda: _retry_failed(config, args, out),
            "fetch": lambda: _fetch(config, args, out),
            "shell": lambda: _shell(config, args),
            "parse": lambda: _parse(config, args, out),
            "rejected": lambda: _rejected(config, args, out),
            "export": lambda: _export(config, args, out),
            "run": lambda: _run(config, args, out, err),
        }
        return commands[args.command]()
    except ConfigError as error:
        for problem in error.problems:
            err.print(problem)
        return exit_code(error)
    except (CheckpointError, OutputError) as error:
        err.print(f"crawler: {error}")
        if isinstance(error, SinkError):
            err.print("What was committed is safe: fix the database and run the same command; it writes from where it was.")
        elif isinstance(error, (CheckpointWriteFailed, OutputError)):
            err.print("What was committed is safe: free some space (or fix permissions) and run the same command.")
        return exit_code(error)
    except LoginFailed as error:
        err.print(f"crawler: {error}")
        err.print("Nothing was lost: fix the login and run the same command to continue.")
        return exit_code(error)
    except CrawlerError as error:
        err.print(f"crawler: {error}")
        return exit_code(error)
    except KeyboardInterrupt:
        err.print(STOPPED)
        return EXIT_INTERRUPTED
