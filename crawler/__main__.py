"""``python -m crawler``: the ``crawler`` command, where its script is not on PATH."""

from .cli import console

console()
