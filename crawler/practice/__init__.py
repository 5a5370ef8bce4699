"""A local practice website for the crawler's examples, tests and benchmarks.

``with PracticeSite(products=100) as site: ...`` serves it on ``site.url``;
``python -m crawler.practice`` serves it from the command line.
"""

from crawler.practice.catalogue import Catalogue, Product, product
from crawler.practice.site import PracticeSite, SiteCounters

__all__ = ["Catalogue", "PracticeSite", "Product", "SiteCounters", "product"]
