"""Running a crawl from Python (a script, a notebook, a job runner): ``crawl``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config, load_config
from .overrides import dotted_settings, overridden

if TYPE_CHECKING:
    from .runner import RunReport
    from .spider import Spider


def crawl(
    target: str | os.PathLike[str] | Config | type[Spider],
    *,
    spider: str | None = None,
    settings: Mapping[str, Any] | None = None,
    args: Mapping[str, Any] | None = None,
    output: str | None = None,
    fresh: bool = False,
) -> RunReport:
    """Run a crawl, or continue the one in its checkpoint, as ``crawler run`` does, and return
    its report (``report.whole_crawl``, ``report.this_run``, ``report.stats``...).

    ``target`` is a config file's path, a ``Config``, or a spider class, which then runs with
    the defaults (checkpoint and output beside the current folder) and ``settings``.
    ``settings`` sets config keys by dotted name (``{"crawl.workers": 4}``), ``args`` spider
    arguments, ``output`` the output path (``crawler run -o``), all validated like the file;
    ``spider`` runs only the spider of that name. Raises ``ConfigError`` (its ``problems``: one
    line each) for a bad config, and what ``crawler run`` reports as an exit code otherwise
    (``LoginFailed``, ``CheckpointError``...). Ctrl-C stops the crawl gracefully, as on the
    command line. With ``crawl.processes`` above 1 the caller's main module must be guarded by
    ``if __name__ == "__main__":`` (worker processes import it again).
    """
    from .runner import run_crawl

    config = overridden(
        _config_of(target), dotted_settings(settings or {}), output=output, arguments=args or {}, spider=spider,
        source="crawl()",
    )
    return run_crawl(config, only=spider, fresh=fresh)


def _config_of(target: str | os.PathLike[str] | Config | type[Spider]) -> Config:
    if isinstance(target, Config):
        return target
    if isinstance(target, type):
        # The spider is found again by its import path, as a config file names one.
        reference = f"{target.__module__}:{target.__qualname__}"
        return Config.with_base_dir({"spiders": [{"spider": reference}]}, Path.cwd(), "crawl()")
    return load_config(Path(target))
