"""Reading sitemaps (sitemaps.org) as a stream of entries: a ``<urlset>`` of pages, a
``<sitemapindex>`` of further sitemaps, or a text file of URLs, one a line; gzipped or not.

A sitemap may hold 50,000 URLs in 50 MB of XML, and an index 50,000 such sitemaps, so nothing
here holds a whole document: gzip is inflated a block at a time, the XML is parsed as it comes
(lxml's pull parser), and every element is dropped from the tree as soon as it has ended, so
what is held is one block of bytes and the entry being read, whatever the shape of the document.
Entries are yielded as they are read.

XML from the web is hostile. No entity is expanded from outside the document (no XXE) and nothing
is fetched from the network; libxml2 refuses entity expansions that amplify (billion laughs); a
document that inflates past ``max_size`` bytes (a gzip bomb) is refused once it passes it, and
one listing more than ``max_entries`` at the entry past them. A document that stops being
readable (malformed XML, cut-off gzip, not a sitemap at all) raises :class:`SitemapError` where
it breaks: the entries yielded before it are good.

Gzip is told by its magic bytes, not by a URL ending in ``.gz`` or a Content-Type, which
servers get wrong both ways. A ``Content-Encoding: gzip`` never reaches here: urllib3 undoes it
as the body is read.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timezone

from lxml import etree

#: The protocol's limits on one sitemap: 50 MB uncompressed, 50,000 URLs (or sitemaps, in an index).
MAX_SIZE = 50 * 1024 * 1024
MAX_ENTRIES = 50_000

# Bytes inflated, and fed to the parser, at a time. Small, because lxml hands over the events of
# a whole feed at once: 16 KiB of sitemap is a few hundred entries' worth.
_BLOCK = 16 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF = len(b"https://")  # enough of a document to tell XML from a list of URLs
_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_WHITESPACE = b" \t\r\n"
_XHTML_LINK = "{http://www.w3.org/1999/xhtml}link"
# Sitemap URLs are under 2,048 characters; a "line" far longer is not a text sitemap.
_MAX_LINE = 64 * 1024


class SitemapError(Exception):
    """A sitemap stopped being readable. ``reason`` names the kind, for counting: ``too_large``,
    ``too_many``, ``gzip``, ``xml``, ``text`` or ``not_sitemap``."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{detail} ({reason})")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class SitemapEntry:
    """One ``<url>`` of a urlset, one ``<sitemap>`` of an index (``is_sitemap``), or one line of a
    text sitemap. ``url`` is the ``<loc>`` without the whitespace around it (empty if it had
    none, or none that could be read); ``lastmod`` is as written; ``alternates`` are the
    ``href``s of its ``<xhtml:link rel="alternate">`` (the page in other languages)."""

    url: str
    lastmod: str | None = None
    alternates: tuple[str, ...] = ()
    is_sitemap: bool = False


def read_sitemap(
    chunks: Iterable[bytes], *, max_size: int = MAX_SIZE, max_entries: int = MAX_ENTRIES
) -> Iterator[SitemapEntry]:
    """The entries of the sitemap whose bytes (gzipped or not) come in ``chunks``, as they are
    read. Raises SitemapError where the document breaks, once it inflates past ``max_size``
    bytes, or at an entry past ``max_entries`` (a small gzip can hold millions of short URLs)."""
    pieces = _inflated(chunks, max_size)
    first = _first_content(pieces)
    if first is None:
        raise SitemapError("not_sitemap", "the document is empty")
    is_xml = first.startswith(b"<") or first.startswith(_UTF16_BOMS)
    entries = _xml_entries(first, pieces) if is_xml else _text_entries(first, pieces)
    for count, entry in enumerate(entries, 1):
        if count > max_entries:
            raise SitemapError("too_many", f"the sitemap lists more than {max_entries:,} entries")
        yield entry


def chunks_of(body: bytes) -> Iterator[bytes]:
    """``body`` in blocks, so that a body already in memory is read like a stream."""
    view = memoryview(body)
    for start in range(0, len(view), _BLOCK):
        yield bytes(view[start : start + _BLOCK])


def parse_lastmod(text: str) -> datetime | None:
    """A W3C Datetime (``2024``, ``2024-05``, ``2024-05-17``, ``2024-05-17T10:30Z``,
    ``2024-05-17T10:30:00.5+02:00``) as an aware datetime, UTC where it gives no zone; None if
    it is not one."""
    text = text.strip()
    if len(text) == 4 and text.isdigit():
        text += "-01-01"
    elif len(text) == 7 and text[4:5] == "-":
        text += "-01"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def as_cutoff(value: str | date) -> datetime:
    """A lastmod cut-off (``"2024-01-01"``, a date or a datetime) as an aware datetime; raises
    ValueError for a string that is not a W3C Datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
    if isinstance(value, date):
        return datetime.combine(value, time(), timezone.utc)
    moment = parse_lastmod(value)
    if moment is None:
        raise ValueError(f"{value!r} is not a date like 2024-01-31 or 2024-01-31T12:00:00Z")
    return moment


# -- bytes ----------------------------------------------------------------------------------


def _inflated(chunks: Iterable[bytes], max_size: int) -> Iterator[bytes]:
    """The document's bytes, inflated if they are gzip, in blocks; SitemapError past ``max_size``."""
    stream = iter(chunks)
    head = b""
    for chunk in stream:  # enough to tell gzip: chunks may come a byte at a time
        head += chunk
        if len(head) >= len(_GZIP_MAGIC):
            break
    pieces = _gunzip(head, stream) if head.startswith(_GZIP_MAGIC) else _plain(head, stream)
    size = 0
    for piece in pieces:
        size += len(piece)
        if size > max_size:
            raise SitemapError("too_large", f"the sitemap is larger than {max_size:,} bytes uncompressed")
        yield piece


def _plain(head: bytes, stream: Iterator[bytes]) -> Iterator[bytes]:
    # In blocks, however big the chunks given: the parser's events for a piece come all at once.
    for chunk in _chained(head, stream):
        if len(chunk) <= _BLOCK:
            yield chunk
        else:
            yield from chunks_of(chunk)


def _gunzip(head: bytes, stream: Iterator[bytes]) -> Iterator[bytes]:
    """Inflate gzip a block at a time (never more than _BLOCK bytes of output at once, however
    well the input compresses). Members in a row are one document, as gzip reads them, and zero
    bytes after the last are padding."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        for data in _chained(head, stream):
            while data:
                if inflater.eof:  # the member ended: another one follows, or padding, or nothing may
                    if not data.strip(b"\0"):
                        break
                    if not data.startswith(_GZIP_MAGIC[: len(data)]):
                        raise SitemapError("gzip", "bytes follow the end of the gzip data")
                    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                piece = inflater.decompress(data, _BLOCK)
                data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
                yield piece
                # A full block may leave output pending inside zlib with no input left for it.
                while len(piece) == _BLOCK and not data and not inflater.eof:
                    piece = inflater.decompress(b"", _BLOCK)
                    yield piece
    except zlib.error as error:
        raise SitemapError("gzip", f"the gzip data is corrupt: {error}") from None
    if not inflater.eof:
        raise SitemapError("gzip", "the gzip data is cut short")


def _chained(head: bytes, stream: Iterator[bytes]) -> Iterator[bytes]:
    yield head
    yield from stream


def _first_content(pieces: Iterator[bytes]) -> bytes | None:
    """The document from its first character on, in a piece long enough to tell what it is (or
    all there is); None if there is nothing. A UTF-8 BOM and whitespace before a document are
    common on the web, and an XML declaration after them would be a syntax error."""
    content = b""
    at_start = True
    for piece in pieces:
        content += piece
        if at_start:
            if len(content) < len(_UTF8_BOM) and _UTF8_BOM.startswith(content):
                continue  # a BOM, maybe, still coming
            content, at_start = content.removeprefix(_UTF8_BOM), False
        content = content.lstrip(_WHITESPACE)  # so whitespace, however long, is never held
        if len(content) >= _SNIFF:
            return content
    return content or None


# -- XML ------------------------------------------------------------------------------------

# The root elements of sitemaps, and the name of their entries.
_ENTRIES = {"urlset": "url", "sitemapindex": "sitemap"}


def _xml_entries(first: bytes, pieces: Iterator[bytes]) -> Iterator[SitemapEntry]:
    parser = etree.XMLPullParser(
        events=("end",),
        resolve_entities=False,  # an entity stays a reference: nothing is read from outside
        no_network=True,
        load_dtd=False,
        huge_tree=False,  # libxml2's limits on depth and on the size of a text stand
        remove_comments=True,
        remove_pis=True,
    )
    reader = _EntryReader()
    try:
        for piece in _chained(first, pieces):
            parser.feed(piece)
            yield from reader.read(parser.read_events())
        parser.close()
    except etree.XMLSyntaxError as error:
        # Entries that ended before the break were parsed: they are good, and yielded first.
        yield from reader.read(parser.read_events())
        raise SitemapError("xml", f"malformed XML: {error}") from None
    yield from reader.read(parser.read_events())


def _local_name(tag: object) -> str:
    return tag.rpartition("}")[2] if isinstance(tag, str) else ""


class _EntryReader:
    """Turns the parser's end events into entries, and drops each element once it has ended."""

    def __init__(self) -> None:
        self.root_name: str | None = None
        # The tags read, in the namespace of the root (the sitemaps.org one, or none), once known.
        self._entry_tag = self._loc_tag = self._lastmod_tag = ""
        self._loc: str | None = None
        self._lastmod: str | None = None
        self._alternates: list[str] = []

    def read(self, events: Iterable[tuple[str, etree._Element]]) -> Iterator[SitemapEntry]:
        # Run for every element of the document: tags are told apart by comparing whole strings,
        # and the tree is walked only where elements are dropped.
        for _, element in events:
            if self.root_name is None:
                self._start(element)
            tag = element.tag
            if tag == self._loc_tag:
                # A loc is text alone: one holding an entity left unexpanded (or an element) is
                # unreadable, and stands as none rather than as the text around it.
                self._loc = element.text if not len(element) else None
            elif tag == self._lastmod_tag:
                self._lastmod = element.text
            elif tag == _XHTML_LINK:
                if element.get("rel") == "alternate" and (href := (element.get("href") or "").strip()):
                    self._alternates.append(href)
            elif tag == self._entry_tag:
                yield SitemapEntry(
                    (self._loc or "").strip(),
                    self._lastmod.strip() if self._lastmod else None,
                    tuple(self._alternates),
                    is_sitemap=self.root_name == "sitemapindex",
                )
                self._loc = self._lastmod = None
                self._alternates = []
            # Done with it: its children go, and so do its earlier siblings, so the tree holds
            # the path to where the parser is and little else, whatever the document's shape.
            element.clear()
            if element.getprevious() is not None:
                parent = element.getparent()
                while element.getprevious() is not None:
                    del parent[0]

    def _start(self, element: etree._Element) -> None:
        """At the first element that ends: is the document a sitemap, and in which namespace."""
        root = element
        while (above := root.getparent()) is not None:
            root = above
        name = _local_name(root.tag)
        if name not in _ENTRIES:
            raise SitemapError("not_sitemap", f"the document is a <{name}>, not a <urlset> or a <sitemapindex>")
        self.root_name = name
        prefix = root.tag[: -len(name)]  # "{namespace}", or nothing
        self._entry_tag, self._loc_tag, self._lastmod_tag = (prefix + _ENTRIES[name], prefix + "loc", prefix + "lastmod")


# -- text -----------------------------------------------------------------------------------


def _text_entries(first: bytes, pieces: Iterator[bytes]) -> Iterator[SitemapEntry]:
    """A text sitemap: one absolute http(s) URL a line, in UTF-8; blank lines are skipped."""
    if not _is_url(first):  # what this is (binary, an error page...), it was never a text sitemap
        raise SitemapError("not_sitemap", f"the document is neither XML nor a list of URLs: {first[:40]!r}")
    for number, line in enumerate(_lines(first, pieces), 1):
        if not (line := line.strip()):
            continue
        if not _is_url(line):
            raise SitemapError("text", f"line {number} is not an http(s) URL: {line[:80]!r}")
        yield SitemapEntry(line.decode("utf-8", errors="replace"))


def _is_url(line: bytes) -> bool:
    return line[:8].lower().startswith((b"http://", b"https://"))


def _lines(first: bytes, pieces: Iterator[bytes]) -> Iterator[bytes]:
    pending = b""
    for piece in _chained(first, pieces):
        lines = (pending + piece).split(b"\n")
        pending = lines.pop()
        yield from lines
        if len(pending) > _MAX_LINE:
            raise SitemapError("text", f"a line is over {_MAX_LINE:,} bytes")
    yield pending
