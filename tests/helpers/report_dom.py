"""Reading a report page's DOM (the file, or Chromium's --dump-dom) into what the tests check."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Dom:
    sections: dict[str, dict[str, int]] = field(default_factory=dict)  # class -> data-kind -> images
    images: dict[str, int] = field(default_factory=dict)  # data-kind -> images on the page
    links: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # every src and href
    csp: str = ""
    sortable_tables: int = 0
    sorted_headers: list[tuple[str, str]] = field(default_factory=list)  # (header, data-dir)
    first_column: dict[str, list[str]] = field(default_factory=dict)  # table id -> its body's first cells


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.dom = Dom()
        self._section: str | None = None
        self._table: str | None = None
        self._in_body = False
        self._row_cell = -1
        self._cell_text: list[str] | None = None
        self._header: tuple[str, str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for key in ("src", "href"):
            if key in a:
                self.dom.sources.append(a[key])
        if tag == "meta" and a.get("http-equiv", "").lower() == "content-security-policy":
            self.dom.csp = a.get("content", "")
        elif tag == "section" and "data-class" in a:
            self._section = a["data-class"]
            self.dom.sections[self._section] = {}
        elif tag == "img":
            kind = a.get("data-kind", "")
            self.dom.images[kind] = self.dom.images.get(kind, 0) + 1
            if self._section is not None:
                counts = self.dom.sections[self._section]
                counts[kind] = counts.get(kind, 0) + 1
        elif tag == "a":
            self.dom.links.append(a.get("href", ""))
        elif tag == "table":
            self._table = a.get("id", "")
            if "sortable" in a.get("class", ""):
                self.dom.sortable_tables += 1
        elif tag == "tbody":
            self._in_body = True
            self.dom.first_column[self._table or ""] = []
        elif tag == "tr":
            self._row_cell = 0
        elif tag in ("td", "th"):
            if self._in_body and self._row_cell == 0:
                self._cell_text = []
            self._row_cell += 1
            if tag == "th" and a.get("data-dir"):
                self._header = ("", a["data-dir"])

    def handle_data(self, data: str) -> None:
        if self._cell_text is not None:
            self._cell_text.append(data)
        if self._header is not None:
            self._header = (self._header[0] + data, self._header[1])

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self._section = None
        elif tag == "tbody":
            self._in_body = False
        elif tag in ("td", "th"):
            if self._cell_text is not None:
                self.dom.first_column[self._table or ""].append("".join(self._cell_text).strip())
                self._cell_text = None
            if self._header is not None:
                self.dom.sorted_headers.append(self._header)
                self._header = None


def parse(text: str) -> Dom:
    parser = _Parser()
    parser.feed(text)
    return parser.dom


def network_urls(text: str) -> list[str]:
    """Every http(s) or protocol-relative URL a tag or a style could fetch (src=, href=, url(...))."""
    pattern = r"""(?:(?:src|href)\s*=\s*["']?|url\(\s*["']?)\s*(?:https?:)?//[^"')\s>]*"""
    return [m.group(0) for m in re.finditer(pattern, text, flags=re.IGNORECASE)]
