"""Politeness: what the crawl owes each host it visits.

``robots``  robots.txt, fetched once per origin through the crawl's sessions and obeyed
``hosts``   per-host limits kept as data: concurrency, delay (fixed or adaptive), pauses
"""
