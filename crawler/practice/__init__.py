"""A local practice website for the crawler's examples, tests and benchmarks.

``with PracticeSite(products=100) as site: ...`` serves it on ``site.url``;
``python -m crawler.practice`` serves it from the command line. Besides the
catalogue and the failure endpoints it has a login area and a bearer-token API
(see :mod:`crawler.practice.members`), logged into with ``site.demo_credentials``.
"""

from crawler.practice.catalogue import Catalogue, Product, product
from crawler.practice.members import api_item, member_secret
from crawler.practice.site import PracticeSite, SiteCounters

__all__ = ["Catalogue", "PracticeSite", "Product", "SiteCounters", "api_item", "member_secret",
           "product"]
