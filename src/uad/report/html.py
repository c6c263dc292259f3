"""Page assembly for uad's self-contained HTML reports: one file that opens from a disk or an e-mail
attachment. Images are inline data URIs; a Content-Security-Policy forbids every fetch (no server, network
or CDN), and a few lines of inline script sort tables and fold sections."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

# Everything the page may load is inline: data: images, inline styles and script, nothing else.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.2em 2em; color: #222; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.2em; margin-top: 1.4em; }
.meta { color: #555; } .meta td { padding: 0 1.2em 0 0; } .meta th { text-align: left; padding-right: .6em; }
table.data { border-collapse: collapse; margin: .6em 0; }
table.data th, table.data td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
table.data td[data-value], tfoot td { text-align: right; }
table.data tfoot td:first-child { text-align: left; }
table.sortable thead th { cursor: pointer; background: #f0f0f0; user-select: none; }
table.sortable thead th[data-dir="asc"]::after { content: " \\25B2"; }
table.sortable thead th[data-dir="desc"]::after { content: " \\25BC"; }
tfoot td, tfoot th { font-weight: bold; background: #fafafa; }
tr.paper td { color: #666; font-style: italic; }
details { margin: .4em 0; } summary { cursor: pointer; font-weight: 600; }
section.class { border-top: 2px solid #ddd; margin-top: 1.2em; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; }
.gallery { display: flex; flex-wrap: wrap; gap: 10px; }
figure.tile { margin: 0; border: 1px solid #ddd; padding: 4px; font-size: 12px; width: 330px; }
figure.tile img { width: 330px; }
figure.tile.wrong { border-color: #c33; }
.note { color: #666; font-size: 12px; } .bad { color: #b00; } pre { background: #f6f6f6; padding: .6em; }
.controls button { margin-right: .5em; }
"""

# Click a header to sort its column (numbers numerically, "-" last); the tfoot rows (mean, paper) stay.
_SCRIPT = """
function sortBy(th) {
  const table = th.closest('table'), body = table.tBodies[0];
  const col = Array.from(th.parentNode.children).indexOf(th);
  const dir = th.dataset.dir === 'desc' ? 'asc' : 'desc';
  table.querySelectorAll('thead th').forEach(h => delete h.dataset.dir);
  th.dataset.dir = dir;
  const key = tr => { const c = tr.children[col]; const v = c.dataset.value ?? c.textContent.trim();
    const n = parseFloat(v); return isNaN(n) ? v : n; };
  const rows = Array.from(body.rows).sort((a, b) => {
    const x = key(a), y = key(b), sign = dir === 'asc' ? 1 : -1;
    if (typeof x !== typeof y) return typeof x === 'number' ? -1 : 1;
    return (x < y ? -1 : x > y ? 1 : 0) * sign; });
  rows.forEach(r => body.appendChild(r));
}
document.querySelectorAll('table.sortable thead th')
  .forEach(th => th.addEventListener('click', () => sortBy(th)));
// report.html#sort=I-AUROC opens with the tables sorted by that column (highest first)
const wanted = decodeURIComponent((location.hash.match(/sort=([^&]+)/) || [])[1] || '');
document.querySelectorAll('table.sortable thead th')
  .forEach(th => { if (wanted && th.textContent === wanted) sortBy(th); });
function foldAll(open) { document.querySelectorAll('details.fold').forEach(d => d.open = open); }
"""


_FOLD_BUTTONS = (
    '<div class="controls"><button type="button" onclick="foldAll(true)">expand all</button>'
    '<button type="button" onclick="foldAll(false)">collapse all</button></div>'
)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def img(data: bytes, alt: str, kind: str, mime: str = "image/png") -> str:
    """An inline image; `kind` (data-kind) lets tests and scripts find every plot and gallery image."""
    return f'<img src="{data_uri(data, mime)}" alt="{escape(alt)}" data-kind="{escape(kind)}">'


def short_path(path: str) -> str:
    """The file's name with its folder (a defect type, or a class): what tells gallery images apart."""
    return "/".join(Path(path).parts[-2:])


def fmt_percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def _cell(value: Any, tag: str = "td") -> str:
    """A table cell; a (text, sort value) pair sorts by the value, a `Raw` is HTML already."""
    if isinstance(value, Raw):
        return f"<{tag}>{value.html}</{tag}>"
    if isinstance(value, tuple):
        text, key = value
        return f'<{tag} data-value="{escape(str(key))}">{escape(str(text))}</{tag}>'
    return f"<{tag}>{escape(str(value))}</{tag}>"


class Raw:
    """HTML that a table cell holds as is (a link)."""

    def __init__(self, html: str) -> None:
        self.html = html


def table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    footer: Iterable[Sequence[Any]] = (),
    sortable: bool = True,
    footer_classes: Sequence[str] = (),
    table_id: str = "",
) -> str:
    """A data table: clicking a header of a sortable one sorts the body rows; footer rows stay put."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    foot_rows = list(footer)
    classes = list(footer_classes) + [""] * (len(foot_rows) - len(footer_classes))
    foot = "".join(
        f'<tr class="{c}">' + "".join(_cell(v, "td") for v in row) + "</tr>"
        for c, row in zip(classes, foot_rows)
    )
    css = "data sortable" if sortable else "data"
    ident = f' id="{escape(table_id)}"' if table_id else ""
    return (
        f'<table class="{css}"{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
        + (f"<tfoot>{foot}</tfoot>" if foot else "")
        + "</table>"
    )


def fold(summary: str, content: str, open_: bool = False) -> str:
    """A folded section (`<details>`), opened and closed all at once by the page's buttons."""
    state = " open" if open_ else ""
    return f'<details class="fold"{state}><summary>{escape(summary)}</summary>{content}</details>'


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in pairs)
    return f'<table class="meta">{rows}</table>'


def page(title: str, body: str, fold_buttons: bool = True) -> str:
    """The whole document: CSP, style, (buttons that open and close every fold), body, script."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>"
        + (_FOLD_BUTTONS if fold_buttons else "")
        + f"{body}<script>{_SCRIPT}</script></body></html>\n"
    )


def gallery_tile(png: bytes, alt: str, caption: str, highlight: bool) -> str:
    """A gallery image with its caption (HTML); `highlight` frames it in red (a wrong or flagged one)."""
    css = "tile wrong" if highlight else "tile"
    picture = img(png, alt, "gallery")
    return (
        f'<figure class="{css}" data-kind="gallery-tile">{picture}<figcaption>{caption}</figcaption></figure>'
    )
