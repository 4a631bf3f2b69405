"""``README.md``: a Hugging Face dataset card, so that a bare ``load_dataset(OUT)`` (on the folder
or the extracted ``dataset.tgz``) gives the split file's train and test with a ``ClassLabel``.

Its YAML front matter lists every image of each split under ``configs`` (exactly the paths of
``train_test_split.json``); without it, ``datasets`` reads ``train_test_split.json`` as a
one-row JSON dataset. ``metadata.jsonl`` is deliberately not listed: ``datasets`` would then
join it to every split and each split would get every row. The label names are the classes that
hold images, sorted: the indices Hugging Face and torchvision both give (a card cannot impose
another order). The body says, for people, what the classes are, how they were found, the
license mix and how to credit the authors.
"""

from __future__ import annotations

import glob
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.dataset import RowSplit, images
from asyncds.assembly.writers.base import Writer, json_string
from asyncds.files import atomic_target

CARD_FILE = "README.md"
_SPLITS = ("train", "test")

# Flickr license id -> Hugging Face license id, where the Hub has one; any other is "other".
HF_LICENSES: dict[int, str] = {
    1: "cc-by-nc-sa-2.0",
    2: "cc-by-nc-2.0",
    4: "cc-by-2.0",
    9: "cc0-1.0",
    11: "cc-by-4.0",
    12: "cc-by-sa-4.0",
    13: "cc-by-nd-4.0",
    14: "cc-by-nc-4.0",
    15: "cc-by-nc-sa-4.0",
    16: "cc-by-nc-nd-4.0",
}


def hf_license(flickr_id: int) -> str:
    return HF_LICENSES.get(flickr_id, "other")


def _yaml(value: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar: class names and paths may hold
    # characters YAML would read as syntax (':', '#', a leading '-').
    return json_string(value)


class CardWriter(Writer):
    name = "card"
    files = (CARD_FILE,)
    archived = True
    per_row = True  # the license mix and the upload dates come from the rows

    def __init__(self) -> None:
        self._licenses: Counter[int] = Counter()
        self._first_upload: int | None = None
        self._last_upload: int | None = None

    def add(self, batch: Sequence[RowSplit]) -> None:
        for row, _ in batch:
            self._licenses[row.license] += 1
            day = row.date_upload
            if day > 0:  # 0: not known
                first, last = self._first_upload, self._last_upload
                self._first_upload = day if first is None else min(first, day)
                self._last_upload = day if last is None else max(last, day)

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        target = ctx.out_dir / CARD_FILE
        with atomic_target(target) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
            self._front_matter(f, ctx)
            f.write(self._body(ctx))
        return [target]

    def _front_matter(self, f: IO[str], ctx: AssemblyContext) -> None:
        sizes = {"train": ctx.split.train, "test": ctx.split.test}
        splits = [name for name in _SPLITS if sizes[name]]  # an empty split is left out
        licenses = sorted({hf_license(lid) for lid in self._licenses})
        f.write("---\n")
        if licenses:
            f.write("license:\n" + "".join(f"- {lid}\n" for lid in licenses))
        f.write("task_categories:\n- image-classification\n")
        if splits:
            # Paths are streamed from the index: the card is as long as the split file.
            f.write("configs:\n- config_name: default\n  data_files:\n")
            for name in splits:
                f.write(f"  - split: {name}\n    path:\n")
                # datasets reads each path as a glob pattern: a '[' in a class name must be
                # escaped or the image is silently not found ('*' and '?' are not allowed).
                _write_list(f, (glob.escape(p) for p in ctx.dataset.paths(name)), "    ")
        f.write("dataset_info:\n  features:\n  - name: image\n    dtype: image\n")
        f.write("  - name: label\n    dtype:\n      class_label:\n        names:\n")
        for i, label in enumerate(ctx.dataset.folders()):
            f.write(f"          '{i}': {_yaml(label)}\n")
        # No ``splits`` here: datasets 5 wants their size in bytes too, and ignores them without.
        f.write("---\n\n")

    def _body(self, ctx: AssemblyContext) -> str:
        config = ctx.config
        flickr = config.flickr
        total = ctx.split.train + ctx.split.test
        lines = [
            "# Image classification dataset built from Flickr searches",
            "",
            f"{images(total)} in {len(ctx.dataset.folders())} classes, made by asyncds: "
            f"{ctx.split.train} in train and {ctx.split.test} in test "
            "(`train_test_split.json` lists them).",
            "",
            "```python",
            "from datasets import load_dataset",
            'ds = load_dataset("path/to/this/folder")  # train and test, label is a ClassLabel',
            "```",
            "",
            "## Classes",
            "",
            "Labels are the class names sorted (the folder names); each class is the Flickr photos"
            " tagged as listed.",
            "",
            "| label | class | Flickr tags | tag mode | train | test |",
            "|---|---|---|---|---|---|",
        ]
        index = {label: i for i, label in enumerate(ctx.dataset.folders())}
        for c in sorted(ctx.classes, key=lambda c: c.label):
            number = str(index[c.label]) if c.label in index else "—"
            spec = next(s for s in config.classes if s.name == c.label)
            tags = ", ".join(f"`{_cell(t)}`" for t in c.tags)
            lines.append(
                f"| {number} | {_cell(c.label)} | {tags} | {spec.tag_mode} | {c.train} | {c.test} |"
            )
        lines += ["", "## How the images were found", ""]
        lines.append(
            f"`flickr.photos.search` per class with the tags above, sorted by `{flickr.sort}`, "
            f"safe search {flickr.safe_search}, "
            + (
                "licenses " + ", ".join(str(i) for i in flickr.license)
                if flickr.license
                else "any license"
            )
            + f"; each class is the first `count` good images in search order, resized to at most "
            f"{config.image.max_side} px on the longer side (JPEG quality {config.image.quality}),"
            " duplicates removed."
        )
        if self._first_upload is not None and self._last_upload is not None:
            lines.append(
                f"The photos were uploaded between {_day(self._first_upload)} and "
                f"{_day(self._last_upload)}."
            )
        lines += ["", "## Licenses", ""]
        lines += _license_lines(self._licenses)
        lines += [
            "",
            "## Credit the authors",
            "",
            "Each photo belongs to its author under its own license. `metadata.jsonl` has one line "
            "per image (`file_name` is the path): `ownername` and `owner` (the author), `title`, "
            "`license` and `license_name`, and `photo_page` (the link to credit). Licenses such "
            "as CC BY require that attribution when you share the images or their derivatives.",
            "",
        ]
        return "\n".join(lines)


def _license_lines(licenses: Counter[int]) -> list[str]:
    from asyncds.flickr import LICENSES  # lazily: the table belongs to the Flickr module

    if not licenses:
        return ["No images."]
    lines = ["| Flickr license | id | images |", "|---|---|---|"]
    for lid, n in sorted(licenses.items(), key=lambda item: (-item[1], item[0])):
        name = LICENSES.get(lid, f"unknown license {lid}")
        lines.append(f"| {name} | {lid} | {n} |")
    return lines


def _write_list(f: IO[str], values: Iterable[str], indent: str) -> None:
    f.writelines(f"{indent}- {_yaml(v)}\n" for v in values)


def _cell(text: str) -> str:
    # A pipe would end a Markdown table cell.
    return text.replace("|", "\\|")


def _day(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
