"""``urls.parquet`` (``export: [urls]``, with ``--search-only`` too): the images' URLs in
img2dataset's input schema, for downloading at scale on Spark or Ray (README: Scaling out).

Columns: ``url``, ``caption`` (the title), then the extra columns img2dataset carries into
each sample's ``.json`` with ``--save_additional_columns``: ``photo_id``, ``label``,
``license``, ``owner``, ``photo_page``. No ``key`` column: img2dataset makes its own keys and
refuses one among the extra columns. After an assembly it lists the dataset's images (by
path); after ``--search-only``, every candidate found, class by class in search order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.dataset import RowSplit
from asyncds.assembly.exports import ExportWriter
from asyncds.files import atomic_target

URLS_PARQUET_FILE = "urls.parquet"
EXTRA_COLUMNS = ("photo_id", "label", "license", "owner", "photo_page")
_ROW_GROUP = 10_000  # rows per row group: a few MB of text


class UrlFields(Protocol):
    """What a row of ``urls.parquet`` is made from: a state row or a search's candidate."""

    url: str
    title: str
    photo_id: str
    label: str
    license: int
    owner: str


def url_record(item: UrlFields) -> dict[str, Any]:
    """One row of ``urls.parquet``."""
    return {
        "url": item.url,
        "caption": item.title,
        "photo_id": item.photo_id,
        "label": item.label,
        "license": item.license,
        "owner": item.owner,
        "photo_page": f"https://www.flickr.com/photos/{item.owner}/{item.photo_id}",
    }


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("url", pa.string()),
            ("caption", pa.string()),
            ("photo_id", pa.string()),
            ("label", pa.string()),
            ("license", pa.int64()),
            ("owner", pa.string()),
            ("photo_page", pa.string()),
        ]
    )


class UrlsParquetFile:
    """``urls.parquet`` written a row group at a time; it appears only on :meth:`commit`."""

    def __init__(self, path: Path, cleanup: contextlib.ExitStack) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self._schema = _schema()
        self._stack = contextlib.ExitStack()
        cleanup.push(self._stack.__exit__)
        tmp = self._stack.enter_context(atomic_target(path))
        self._writer = pq.ParquetWriter(tmp, self._schema)
        self._stack.callback(self._writer.close)  # closed before the temporary is renamed
        self._pending: list[dict[str, Any]] = []

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        for record in records:
            self._pending.append(record)
            if len(self._pending) >= _ROW_GROUP:
                self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._pending:
            self._writer.write_table(pa.Table.from_pylist(self._pending, schema=self._schema))
            self._pending.clear()

    def commit(self) -> Path:
        self._flush()
        self._stack.close()
        return self.path


def write_urls_parquet(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    """``urls.parquet`` of ``records`` (from :func:`url_record`), for ``--search-only``."""
    with contextlib.ExitStack() as cleanup:
        out = UrlsParquetFile(path, cleanup)
        out.add(records)
        return out.commit()


class UrlsParquetWriter(ExportWriter):
    name = "urls_parquet"
    export = "urls"
    files = (URLS_PARQUET_FILE,)
    requires = ("pyarrow",)
    per_row = True

    def start(self, ctx: AssemblyContext, cleanup: contextlib.ExitStack) -> None:
        self._out = UrlsParquetFile(ctx.out_dir / URLS_PARQUET_FILE, cleanup)

    def add(self, batch: Sequence[RowSplit]) -> None:
        self._out.add(url_record(row) for row, _ in batch)

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        return [self._out.commit()]
