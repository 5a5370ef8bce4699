"""crawler: a synchronous web-crawling framework."""

__version__ = "0.1.0"
