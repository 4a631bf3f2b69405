"""``metadata.jsonl``: one attributed line per dataset image, by path, streamed from the
ordered pass."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.dataset import RowSplit, relpath
from asyncds.assembly.writers.base import StreamedFile, Writer, json_record
from asyncds.state import CandidateRow

METADATA_FILE = "metadata.jsonl"


def metadata_record(row: CandidateRow, split: str) -> dict[str, Any]:
    """One ``metadata.jsonl`` line for a dataset image."""
    from asyncds.flickr import LICENSES  # lazily: the table belongs to the Flickr module

    return {
        "file_name": relpath(row),
        "label": row.label,
        "split": split,
        "photo_id": row.photo_id,
        "owner": row.owner,
        "ownername": row.ownername,
        "title": row.title,
        "license": row.license,
        "license_name": LICENSES.get(row.license, f"unknown license {row.license}"),
        "photo_page": f"https://www.flickr.com/photos/{row.owner}/{row.photo_id}",
        "url": row.url,
        "width": row.stored_width,
        "height": row.stored_height,
        "sha256": row.sha256,
    }


class MetadataWriter(Writer):
    name = "metadata"
    files = (METADATA_FILE,)
    archived = True
    per_row = True

    def start(self, ctx: AssemblyContext, cleanup: contextlib.ExitStack) -> None:
        self._out = StreamedFile(ctx.out_dir / METADATA_FILE, cleanup)

    def add(self, batch: Sequence[RowSplit]) -> None:
        # One write per batch: the same bytes as a write per line.
        self._out.file.write(
            "".join(json_record(metadata_record(row, split)) + "\n" for row, split in batch)
        )

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        return [self._out.commit()]
