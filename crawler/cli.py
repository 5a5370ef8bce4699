"""``crawler``: run, check and list the crawls a config.toml describes, and inspect their checkpoint.

Exit codes of ``crawler run``, the crawl's whole story (earlier runs included), so a script or a
cron job can tell a good crawl from a broken one:

0    finished, and no request failed
1    the run failed: it could not log in, the spider's start_requests raised, or a request
     failed on an internal error (a bug in crawler)
2    the config or the command line is wrong
3    the crawl's files cannot be used: the checkpoint (in use, not a checkpoint, damaged, for
     other spiders, newer, read-only) or a write to it or to an output file failed (a full disk,
     permissions)
4    finished, but requests failed (HTTP errors, timeouts, callbacks that raised...):
     ``crawler status`` shows them by kind, ``crawler retry-failed`` queues them again
130  stopped (Ctrl-C or SIGTERM, at any moment): run the same command to continue
"""

# Only the standard library here: this module is what runs first, and until ``main`` has made
# SIGTERM an interruption, a SIGTERM kills the process without a word. The commands, and the
# libraries they need (a good part of a second to import), come in under the handler.
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType
from typing import NoReturn

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_STORAGE = 3
EXIT_REQUESTS_FAILED = 4
EXIT_INTERRUPTED = 130

STOPPED = "Stopped at once. The checkpoint is consistent: run the same command to continue."


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Until a crawl installs its own handler (a first signal then stops it gracefully), SIGTERM
    # is what Ctrl-C is: an interruption that unwinds, closing what was opened.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """The ``crawler`` command: its exit code, with one line and 130 for Ctrl-C or SIGTERM at
    any moment, from start-up to the last line of the summary."""
    if threading.current_thread() is not threading.main_thread():
        return _run(argv)  # signal handlers belong to the main thread; an embedding app keeps its own
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def console() -> NoReturn:
    """The installed ``crawler`` command: ``main``, with SIGTERM an interruption until the
    process is gone. Once the exit code is decided a late signal is ignored, so that the code
    is what the shell sees, not a death by signal while the interpreter shuts down."""
    signal.signal(signal.SIGTERM, _interrupt)
    code = _run(None)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    sys.exit(code)


def _run(argv: list[str] | None) -> int:
    try:
        from .commands import run_command

        return run_command(argv)
    except KeyboardInterrupt:  # before the commands could say it themselves
        print(STOPPED, file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    console()
