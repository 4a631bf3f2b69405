"""``report.html``: one self-contained page to look at the dataset and pick photos to exclude.

What it shows: the summary (per class requested / good / train / test / dropped by reason /
licenses, as tables and a bar chart, rendered here so they show without script), then per
class every image as a thumbnail with its photo id (linked to its Flickr page), license and
author, and the dropped images worth a look (near-duplicates and cross-class copies) beside the
dataset image they collided with. A reviewer ticks photos; the ids go to a text box and, with a
button, to the clipboard: what the config's ``exclude:`` list takes.

Self-contained, because a browser will not let a ``file://`` page fetch its sibling data
files: everything but the images is inline (no script, style or font from anywhere, and a
Content-Security-Policy that forbids any request but the folder's own files). Thumbnails are
the stored images by relative path, so the page works wherever the folder (or ``dataset.tgz``,
which carries it) is unpacked. The only absolute URLs are the links to the photos' Flickr pages,
built by the page's script from one prefix.

It streams: the ordered pass writes each class's rows as compact JSON arrays
(``[photo id, license id, author, owner, split, title, path or 0]``: about 70 bytes an image,
at most about 210 with the text cut to :data:`TITLE_BYTES` and :data:`AUTHOR_BYTES`)
to an anonymous temporary file per class, and ``finish`` copies them into the page, so memory is
one batch whatever the dataset's size; 3 classes of 20,000 images make a page of 4 to 13 MB.
The page draws only the thumbnails in view (a windowed grid: absolutely placed cells for the
visible rows, redrawn on scroll), so 20,000 a class stay usable.

Everything user-controlled (class names, titles, authors, reasons) is escaped: HTML-escaped in
the markup made here, ``<`` written as ``\\u003c`` in the inline JSON (so no text can end the
script element), and set as text (never markup) by the script.
"""

from __future__ import annotations

import contextlib
import functools
import html
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import IO, Any

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.dataset import RowSplit, read_rows, relpath
from asyncds.assembly.writers.attribution import license_name
from asyncds.assembly.writers.base import StreamedFile, Writer, plain
from asyncds.assembly.writers.preview import preview_name
from asyncds.assembly.writers.summary import summary_json
from asyncds.files import image_relpath
from asyncds.state import Status

REPORT_FILE = "report.html"
# Text is cut to these many UTF-8 bytes in the page (metadata.jsonl has it whole), so that an
# image costs at most about 210 bytes: 60,000 images stay under 15 MB whatever their text.
TITLE_BYTES = 100
AUTHOR_BYTES = 50
OWNER_BYTES = 30
DROPPED_LIMIT = 5000  # dropped images shown at most (the summary counts them all)
DROPPED_SHOWN = (Status.NEAR_DUPLICATE, Status.CROSS_CLASS)  # exact duplicates need no look

# No spaces after separators: a fifth of the inline data at 60,000 images.
json_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# What dedup's reasons name (asyncds.dedup._reason), with its optional cross-class note.
_COLLIDED = re.compile(
    r"^(?:same image as (?P<path>.+?)|near-duplicate \(distance \d+\) of (?P<near>.+?)"
    r"|photo also found under (?P<label>.+?))"
    r"(?: \(an image also found under another class\))?$"
)


def script_json(text: str) -> str:
    """JSON text made safe inside a ``<script>`` element: no ``<`` at all (``</script>`` and
    ``<!--`` cannot appear); ``\\u003c`` is the same string to ``JSON.parse``."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def collided_path(label: str, photo_id: str, reason: str) -> str:
    """The image a dedup drop collided with (its relative path), from the drop's reason; ""
    when the reason names none."""
    m = _COLLIDED.match(reason)
    if m is None:
        return ""
    if m.group("label") is not None:
        return image_relpath(m.group("label"), photo_id)
    return m.group("path") or m.group("near") or ""


def cut(text: str, size: int) -> str:
    """``text`` on one line (:func:`plain`), cut to at most ``size`` UTF-8 bytes at a
    character boundary."""
    text = plain(text)
    if len(text) * 4 <= size:  # short enough whatever its characters
        return text
    return text.encode()[:size].decode("utf-8", "ignore")


def _row_record(row: Any, split: str) -> str:
    path = relpath(row)
    usual = path == image_relpath(row.label, row.photo_id)
    return json_compact(
        [
            row.photo_id,
            row.license,
            cut(row.ownername, AUTHOR_BYTES),
            cut(row.owner, OWNER_BYTES),
            1 if split == "test" else 0,
            cut(row.title, TITLE_BYTES),
            0 if usual else path,
        ]
    )


class ReportWriter(Writer):
    name = "report"
    files = (REPORT_FILE,)
    archived = True  # the page works unpacked from dataset.tgz: it travels with the images
    per_row = True

    def start(self, ctx: AssemblyContext, cleanup: contextlib.ExitStack) -> None:
        self._cleanup = cleanup
        self._classes: dict[str, IO[str]] = {}
        self._counts: dict[str, int] = {}
        self._licenses: set[int] = set()

    def _class_file(self, label: str) -> IO[str]:
        f = self._classes.get(label)
        if f is None:
            # Anonymous (unlinked at once): nothing is left behind, even by a killed run.
            f = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")  # noqa: SIM115
            self._cleanup.enter_context(f)
            self._classes[label] = f
            self._counts[label] = 0
        return f

    def add(self, batch: Sequence[RowSplit]) -> None:
        by_class: dict[str, list[str]] = {}
        for row, split in batch:
            self._licenses.add(row.license)
            by_class.setdefault(row.label, []).append(_row_record(row, split))
        for label, records in by_class.items():
            f = self._class_file(label)
            f.write(("," if self._counts[label] else "") + ",".join(records))
            self._counts[label] += len(records)

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        summary = summary_json(ctx)
        previews = {out.path.name for out in ctx.outputs}
        out = StreamedFile(ctx.out_dir / REPORT_FILE, self._cleanup)
        f = out.file
        head, end = _page_parts()
        f.write(head)
        f.write(_summary_html(summary, previews))
        f.write('<script type="application/json" id="asyncds-data">{"classes":[')
        for i, spec in enumerate(ctx.config.classes):
            label = spec.name
            f.write(("," if i else "") + script_json(json_compact({"label": label})[:-1]))
            f.write(',"rows":[')
            group = self._classes.get(label)
            if group is not None:
                group.seek(0)
                # The rows' JSON is escaped as it is copied, a chunk at a time.
                while chunk := group.read(1 << 16):
                    f.write(script_json(chunk))
                group.close()
            f.write("]}")
        licenses = {str(lid): license_name(lid) for lid in sorted(self._licenses)}
        f.write('],"licenses":' + script_json(json_compact(licenses)))
        f.write(',"dropped":[')
        shown, total = _write_dropped(f, ctx)
        f.write(f'],"dropped_total":{total},"dropped_shown":{shown}}}</script>\n')
        f.write(end)
        return [out.commit()]


def _write_dropped(f: IO[str], ctx: AssemblyContext) -> tuple[int, int]:
    """The dropped images worth a look, as ``[label, photo id, status, reason, owner, path of
    the image it collided with, whether that one is in the dataset]``; (shown, total)."""
    if ctx.rows is None:
        return 0, 0
    labels = set(ctx.dataset.labels)
    shown = total = 0
    for row in read_rows(ctx.rows, statuses=DROPPED_SHOWN):
        if row.label not in labels:
            continue
        total += 1
        if shown >= DROPPED_LIMIT:
            continue
        other = collided_path(row.label, row.photo_id, row.reason)
        record = [
            row.label,
            row.photo_id,
            str(row.status),
            plain(row.reason),
            plain(row.owner),
            other,
            1 if other and ctx.dataset.contains(other) else 0,
        ]
        f.write(("," if shown else "") + script_json(json_compact(record)))
        shown += 1
    return shown, total


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _summary_html(summary: Mapping[str, Any], previews: set[str]) -> str:
    classes: Mapping[str, Any] = summary["classes"]
    totals = summary["totals"]
    reasons = [r for r, n in totals["dropped"].items() if n]
    parts = ['<section id="summary"><h2>Summary</h2>']
    parts.append(
        f'<p class="lead">{_e(totals["good"])} images in {_e(len(classes))} classes '
        f"({_e(summary['split']['train'])} train, {_e(summary['split']['test'])} test; split "
        f"{_e(summary['split']['description'])}).</p>"
    )
    # The counts table: a cell per number, each tagged with its class and key for tests.
    head = ["class", "requested", "good", "train", "test", "dropped", *reasons]
    parts.append('<table class="counts"><thead><tr>')
    parts += [f"<th>{_e(h)}</th>" for h in head]
    parts.append("</tr></thead><tbody>")
    keys = ("requested", "good", "train", "test", "dropped_total")

    def row(name: str, data: Mapping[str, Any], attr: str) -> None:
        parts.append(f"<tr><th scope=row>{_e(name)}</th>")
        for key in keys:
            parts.append(f'<td {attr} data-key="{key}">{_e(data[key])}</td>')
        for reason in reasons:
            n = data["dropped"].get(reason, 0)
            parts.append(f'<td {attr} data-key="dropped.{_e(reason)}">{_e(n)}</td>')
        parts.append("</tr>")

    for label, c in classes.items():
        row(label, c, f'data-class="{_e(label)}"')
    parts.append("</tbody><tfoot>")
    row("total", totals, "data-total")
    parts.append("</tfoot></table>")

    # The bar chart: per class, its good images (train, test) and its drops, on one scale.
    scale = max(
        [1, *(max(c["requested"], c["good"], c["dropped_total"]) for c in classes.values())]
    )
    parts.append('<div class="chart" aria-label="images per class">')
    for label, c in classes.items():
        tr, te, dr = (100 * c[k] / scale for k in ("train", "test", "dropped_total"))
        req = 100 * c["requested"] / scale
        parts.append(
            f'<div class="bar-label">{_e(label)}</div><div class="bars">'
            f'<div class="bar"><span class="train" style="width:{tr:.2f}%"></span>'
            f'<span class="test" style="width:{te:.2f}%"></span>'
            f'<span class="req" style="left:{req:.2f}%" title="requested {_e(c["requested"])}">'
            f"</span></div>"
            f'<div class="bar"><span class="drop" style="width:{dr:.2f}%"></span></div></div>'
        )
    parts.append(
        '</div><p class="legend"><span class="key train"></span>train '
        '<span class="key test"></span>test <span class="key req"></span>requested '
        '<span class="key drop"></span>dropped</p>'
    )

    licenses: Mapping[str, Any] = summary.get("licenses") or {}
    if licenses:
        parts.append('<table class="licenses"><thead><tr><th>license</th><th>id</th>')
        parts += [f"<th>{_e(label)}</th>" for label in classes]
        parts.append("<th>images</th></tr></thead><tbody>")
        for name, entry in licenses.items():
            parts.append(f"<tr><th scope=row>{_e(name)}</th><td>{_e(entry['id'])}</td>")
            parts += [
                f'<td data-class="{_e(label)}" data-license="{_e(entry["id"])}">{_e(n)}</td>'
                for label, n in entry["classes"].items()
            ]
            parts.append(f"<td>{_e(entry['images'])}</td></tr>")
        parts.append("</tbody></table>")
    if summary["warnings"]:
        parts.append('<details class="warnings"><summary>warnings</summary><ul>')
        parts += [f"<li>{_e(w)}</li>" for w in summary["warnings"]]
        parts.append("</ul></details>")
    sheets = [label for label in classes if preview_name(label) in previews]
    if sheets:
        parts.append('<p class="previews">Contact sheets of a seeded sample, for any viewer: ')
        parts.append(
            ", ".join(
                f'<a href="{_e(_href(preview_name(label)))}">{_e(preview_name(label))}</a>'
                for label in sheets
            )
        )
        parts.append("</p>")
    parts.append("</section>")
    parts.append('<nav id="tabs" aria-label="classes">')
    for i, (label, c) in enumerate(classes.items()):
        parts.append(
            f'<button type="button" class="tab" data-tab="{i}">{_e(label)} '
            f'<span class="n">{_e(c["good"])}</span></button>'
        )
    parts.append(
        '<button type="button" class="tab" data-tab="dropped">dropped, worth a look '
        '<span class="n" id="dropped-n"></span></button></nav>'
    )
    parts.append('<main id="view"><p class="hint">Choose a class above.</p></main>')
    return "".join(parts)


def _href(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


_CSP = (
    "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; "
    "script-src 'unsafe-inline'"
)
_PICKED = (
    '<div id="picked"><span id="picked-n">No photo ticked</span>'
    '<button type="button" id="copy">Copy ids</button>'
    '<button type="button" id="clear">Clear</button>'
    '<span id="copied" role="status"></span>'
    '<textarea id="ids" aria-label="ticked photo ids, one per line" '
    'placeholder="Tick photos: their ids appear here, one per line, for the exclude list">'
    "</textarea></div>\n"
)


@functools.cache
def _page_parts() -> tuple[str, str]:
    """The page's head (with its style) and its end (the pick bar and the script), from the
    package's ``report.css`` and ``report.js``."""
    package = resources.files(__package__)
    css = (package / "report.css").read_text(encoding="utf-8")
    js = (package / "report.js").read_text(encoding="utf-8")
    head = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="referrer" content="no-referrer">\n'
        "<title>asyncds dataset report</title>\n"
        f"<style>\n{css}</style>\n</head>\n<body>\n<h1>asyncds dataset report</h1>\n"
    )
    return head, f"{_PICKED}<script>\n{js}</script>\n</body>\n</html>\n"
