"""``ATTRIBUTION.md``: the credits to ship with the images, and the dataset's license mix.

One Markdown line per image — title (linked to the photo's Flickr page), author, license
(linked to its deed), file — grouped under one heading per license, in license-id order. That
is what CC BY asks of whoever shares the images (title, author, source, license), so shipping
this file with them honours it.

It streams: each line goes, as the ordered pass (by path) brings it, to an anonymous temporary
file of its license, and ``finish`` concatenates them under their headings. Memory is one batch
and a counter per (class, license) whatever the dataset's size, and the file is the same bytes
on every run (lines by path within a license; no dates). The counts also go into the summary
(``ctx.summary_fields["licenses"]``), with a warning when All Rights Reserved photos are in.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.dataset import RowSplit, images, relpath
from asyncds.assembly.writers.base import StreamedFile, Writer, plain
from asyncds.state import CandidateRow

log = logging.getLogger(__name__)

ATTRIBUTION_FILE = "ATTRIBUTION.md"
ALL_RIGHTS_RESERVED = 0
# Every id outside the known table shares one group: a bounded number of temporary files,
# whatever ids a server sends.
OTHER = -1

_CC = "https://creativecommons.org/licenses/"
# The deed of each license, as flickr.photos.licenses.getInfo gives it (2025-06).
LICENSE_URLS: dict[int, str] = {
    0: "https://www.flickrhelp.com/hc/en-us/articles/"
    "10710266545556-Using-Flickr-images-shared-by-other-members",
    1: _CC + "by-nc-sa/2.0/",
    2: _CC + "by-nc/2.0/",
    3: _CC + "by-nc-nd/2.0/",
    4: _CC + "by/2.0/",
    5: _CC + "by-sa/2.0/",
    6: _CC + "by-nd/2.0/",
    7: "https://www.flickr.com/commons/usage/",
    8: "https://www.usa.gov/government-copyright",
    9: "https://creativecommons.org/publicdomain/zero/1.0/",
    10: "https://creativecommons.org/publicdomain/mark/1.0/",
    11: _CC + "by/4.0/",
    12: _CC + "by-sa/4.0/",
    13: _CC + "by-nd/4.0/",
    14: _CC + "by-nc/4.0/",
    15: _CC + "by-nc-sa/4.0/",
    16: _CC + "by-nc-nd/4.0/",
}
_PUBLIC_DOMAIN = frozenset({7, 8, 9, 10})

# Characters that could start Markdown or HTML inside a line of text: links, emphasis, code,
# HTML tags and entities, strikethrough, tables, math. Each is backslash-escaped (CommonMark
# allows that for any ASCII punctuation); the rest stays readable as plain text.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>&~|$])")


def license_name(license_id: int) -> str:
    """The name ``metadata.jsonl`` gives a license id."""
    from asyncds.flickr import LICENSES  # lazily: the table belongs to the Flickr module

    return LICENSES.get(license_id, f"unknown license {license_id}")


# Text with none of these is already one line of literal Markdown (most titles and names):
# a special or control character, whitespace other than a space, or a space that is leading,
# trailing or doubled.
_NEEDS_WORK = re.compile(r"[\\`*_\[\]<>&~|$\x00-\x1f\x7f-\x9f]|[^\S ]|  |^ | $")


def markdown_text(text: str) -> str:
    """``text`` as one line of literal Markdown: whitespace runs (newlines too) become one
    space, control characters go, and Markdown/HTML syntax is escaped."""
    if _NEEDS_WORK.search(text) is None:  # one scan instead of three passes: 4 per image
        return text
    return _MARKDOWN_SPECIAL.sub(r"\\\1", plain(text))


def photo_page(row: CandidateRow) -> str:
    # Quoted: the owner and id come from the API, and a space or ")" would end the link.
    return (
        f"https://www.flickr.com/photos/{quote(row.owner, safe='@')}/{quote(row.photo_id, safe='')}"
    )


def attribution_line(row: CandidateRow) -> str:
    """One image's credit: ``- [title](photo page) by author, [license](deed) (file)``."""
    title = markdown_text(row.title) or "Untitled"
    author = markdown_text(row.ownername) or markdown_text(row.owner) or "unknown author"
    name = markdown_text(license_name(row.license))
    url = LICENSE_URLS.get(row.license)
    license_text = f"[{name}]({url})" if url else name
    return (
        f"- [{title}]({photo_page(row)}) by {author}, {license_text}"
        f" ({markdown_text(relpath(row))})\n"
    )


def _terms(license_id: int) -> str:
    """What a license asks of whoever shares the images, in one sentence."""
    if license_id == ALL_RIGHTS_RESERVED:
        return (
            "The owners reserve all rights: these photos are not licensed for reuse. Ask each "
            "owner for permission, or leave them out (`flickr.license: open`, then `--fresh`)."
        )
    if license_id in _PUBLIC_DOMAIN:
        return "No conditions; crediting the authors is still courteous."
    if license_id == OTHER:
        return "License ids asyncds does not know: read the terms on each photo's page."
    name = license_name(license_id)
    terms = ["Credit the author (keep these lines with the images)"]
    if "NC" in name:
        terms.append("non-commercial use only")
    if "ND" in name:
        terms.append("no derivatives: share the images unchanged")
    if "SA" in name:
        terms.append("share adaptations under the same license")
    return "; ".join(terms) + "."


class AttributionWriter(Writer):
    name = "attribution"
    files = (ATTRIBUTION_FILE,)
    archived = True
    per_row = True

    def start(self, ctx: AssemblyContext, cleanup: contextlib.ExitStack) -> None:
        self._cleanup = cleanup
        self._groups: dict[int, IO[str]] = {}
        self._counts: Counter[tuple[str, int]] = Counter()

    def _group(self, license_id: int) -> IO[str]:
        key = license_id if license_id in LICENSE_URLS else OTHER
        group = self._groups.get(key)
        if group is None:
            # Anonymous (unlinked at once): nothing is left behind, even by a killed run.
            group = tempfile.TemporaryFile("w+", encoding="utf-8", newline="\n")  # noqa: SIM115
            self._cleanup.enter_context(group)
            self._groups[key] = group
        return group

    def add(self, batch: Sequence[RowSplit]) -> None:
        for row, _ in batch:
            self._counts[row.label, row.license] += 1
            self._group(row.license).write(attribution_line(row))

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        total = sum(self._counts.values())
        per_group: Counter[int] = Counter()
        for (_, license_id), n in self._counts.items():
            per_group[license_id if license_id in LICENSE_URLS else OTHER] += n
        out = StreamedFile(ctx.out_dir / ATTRIBUTION_FILE, self._cleanup)
        out.file.write(_preamble(total))
        # Known ids in order, the unknown group last.
        for key in sorted(self._groups, key=lambda k: (k == OTHER, k)):
            group = self._groups[key]
            title = "Other licenses" if key == OTHER else markdown_text(license_name(key))
            out.file.write(f"\n## {title} ({images(per_group[key])})\n\n{_terms(key)}")
            if key in LICENSE_URLS:
                out.file.write(f" License: <{LICENSE_URLS[key]}>")
            out.file.write("\n\n")
            group.seek(0)
            shutil.copyfileobj(group, out.file)
            group.close()
        path = out.commit()
        log.debug("%s: %s under %d licenses", ATTRIBUTION_FILE, images(total), len(per_group))
        ctx.summary_fields["licenses"] = license_summary(self._counts, ctx)
        reserved = sum(n for (_, lid), n in self._counts.items() if lid == ALL_RIGHTS_RESERVED)
        if reserved:
            ctx.warnings.append(
                f"All Rights Reserved: {images(reserved)} of {total} in the dataset (license 0, "
                "not licensed for reuse); flickr.license: open (or an id list without 0) "
                "excludes them, with --fresh for this folder"
            )
        return [path]


def _preamble(total: int) -> str:
    if not total:
        return "# Attribution\n\nThis dataset has no images yet.\n"
    return (
        "# Attribution\n\n"
        f"The {images(total)} of this dataset are photos from Flickr, each under its author's "
        "license. Each line credits one image: its title (linked to its Flickr page), its "
        "author, its license (linked to the license) and its file in this dataset. Licenses "
        "that require credit (every CC BY license) are honoured by shipping this file with the "
        "images, or by showing an image's line wherever the image is shown.\n"
    )


def license_summary(counts: Counter[tuple[str, int]], ctx: AssemblyContext) -> dict[str, Any]:
    """``summary.json``'s ``licenses``: per license present, by id, keyed by its name (as
    ``metadata.jsonl`` names it): its id, its images, and its images per class (every class,
    zeros included, in config order)."""
    section: dict[str, Any] = {}
    for license_id in sorted({lid for _, lid in counts}):
        by_class = {c.label: counts.get((c.label, license_id), 0) for c in ctx.classes}
        section[license_name(license_id)] = {
            "id": license_id,
            "images": sum(by_class.values()),
            "classes": by_class,
        }
    return section
