"""``parquet-<split>set-000000.parquet``, ... (``export: [parquet]``): Parquet shards that
Hugging Face ``datasets`` reads with an ``Image`` feature (the JPEG's bytes embedded) and a
``ClassLabel`` ``label`` (the sorted class names), plus every other column of
``metadata.jsonl`` (attribution: owner, title, license, photo page, ...).

The features ride in the schema's ``huggingface`` metadata, which is how ``datasets`` itself
stores them, so no ``datasets`` is needed to write. Rows go out a row group at a time (small
groups, as Hugging Face advises for images), so memory holds one group; a new shard starts
past :data:`SHARD_BYTES` of images.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.dataset import RowSplit, relpath
from asyncds.assembly.exports import SPLITS, ExportWriter, ShardSet
from asyncds.assembly.writers.metadata import metadata_record

SHARD_BYTES = 256 * 1024 * 1024
ROW_GROUP = 100  # images per row group

# metadata.jsonl's columns besides file_name and label, with their Arrow types.
_STRING = ("split", "photo_id", "owner", "ownername", "title", "license_name", "photo_page")
_INT = ("license", "width", "height")
_COLUMNS = ("file_name", *_STRING, "url", *_INT, "sha256")


def _schema(class_names: Sequence[str]) -> Any:
    import pyarrow as pa

    fields = [
        pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        pa.field("label", pa.int64()),
        *(pa.field(c, pa.int64() if c in _INT else pa.string()) for c in _COLUMNS),
    ]
    features: dict[str, Any] = {
        "image": {"_type": "Image"},
        "label": {"names": list(class_names), "_type": "ClassLabel"},
    }
    for column in _COLUMNS:
        features[column] = {"dtype": "int64" if column in _INT else "string", "_type": "Value"}
    meta = {"info": {"features": features}}
    return pa.schema(fields, metadata={"huggingface": json.dumps(meta)})


class ParquetWriter(ExportWriter):
    name = "parquet"
    export = "parquet"
    files = ("parquet-*.parquet",)
    requires = ("pyarrow",)
    per_row = True

    def __init__(self, shard_bytes: int = SHARD_BYTES, row_group: int = ROW_GROUP) -> None:
        self.shard_bytes = shard_bytes
        self.row_group = row_group

    def start(self, ctx: AssemblyContext, cleanup: contextlib.ExitStack) -> None:
        names = sorted(spec.name for spec in ctx.config.classes)
        self._index = {name: i for i, name in enumerate(names)}
        self._schema = _schema(names)
        self._out_dir = ctx.out_dir
        self._shards = ShardSet(ctx.out_dir, "parquet", "parquet", cleanup)
        self._writers: dict[str, Any] = {}  # split -> pyarrow.parquet.ParquetWriter
        self._sizes: dict[str, int] = {}
        self._pending: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
        self._samples = dict.fromkeys(SPLITS, 0)
        cleanup.callback(self._close_all)  # closed before the temporaries are removed

    def add(self, batch: Sequence[RowSplit]) -> None:
        for row, split in batch:
            path = relpath(row)
            with open(os.path.join(self._out_dir, path), "rb") as f:
                image = f.read()
            record = metadata_record(row, split)
            record["image"] = {"bytes": image, "path": path}
            record["label"] = self._index[row.label]
            pending = self._pending[split]
            pending.append(record)
            self._samples[split] += 1
            if len(pending) >= self.row_group:
                self._flush(split)

    def _flush(self, split: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self._pending[split]
        if not rows:
            return
        size = sum(len(r["image"]["bytes"]) for r in rows)
        writer = self._writers.get(split)
        if writer is not None and self._sizes[split] + size > self.shard_bytes:
            writer.close()
            writer = None
        if writer is None:
            writer = self._writers[split] = pq.ParquetWriter(self._shards.open(split), self._schema)
            self._sizes[split] = 0
        writer.write_table(pa.Table.from_pylist(rows, schema=self._schema))
        self._sizes[split] += size
        rows.clear()

    def _close_all(self) -> None:
        for writer in self._writers.values():
            writer.close()

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        for split in SPLITS:
            self._flush(split)
        self._close_all()
        paths = self._shards.commit()
        ctx.summary_fields["parquet"] = {
            "shards": [p.name for p in paths],
            "samples": dict(self._samples),
        }
        return paths
