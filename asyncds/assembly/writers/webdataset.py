"""``webdataset-<split>set-000000.tar``, ... (``export: [webdataset]``): WebDataset shards,
one sample per image with ``<photo id>.jpg`` (the stored JPEG), ``.cls`` (the label's index
in the sorted class names, as text) and ``.json`` (its ``metadata.jsonl`` record plus
``cls``). A new shard starts past :data:`SHARD_BYTES`.

Plain tar files written here (the ``webdataset`` library is only needed to read them), with
the archive's deterministic headers; streamed from the ordered pass, one image in memory at a
time. Samples come in path order (class by class): shuffle when reading (``shardshuffle`` and
``shuffle(n)``).
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.dataset import RowSplit, relpath
from asyncds.assembly.exports import SPLITS, ExportWriter, ShardSet
from asyncds.assembly.writers.archive import tar_header
from asyncds.assembly.writers.base import json_record
from asyncds.assembly.writers.metadata import metadata_record

SHARD_BYTES = 256 * 1024 * 1024  # "a few hundred MB": large reads, yet many shards to spread


class WebDatasetWriter(ExportWriter):
    name = "webdataset"
    export = "webdataset"
    files = ("webdataset-*.tar",)
    per_row = True

    def __init__(self, shard_bytes: int = SHARD_BYTES) -> None:
        self.shard_bytes = shard_bytes

    def start(self, ctx: AssemblyContext, cleanup: contextlib.ExitStack) -> None:
        self._out_dir = ctx.out_dir
        self._index = {name: i for i, name in enumerate(sorted(s.name for s in ctx.config.classes))}
        self._shards = ShardSet(ctx.out_dir, "webdataset", "tar", cleanup)
        self._files: dict[str, IO[bytes]] = {}
        self._sizes: dict[str, int] = {}
        self._samples = dict.fromkeys(SPLITS, 0)
        cleanup.callback(self._close_all)  # the temporaries must be closed before removal

    def add(self, batch: Sequence[RowSplit]) -> None:
        for row, split in batch:
            path = os.path.join(self._out_dir, relpath(row))
            with open(path, "rb") as f:
                image = f.read()
                mtime = int(os.fstat(f.fileno()).st_mtime)
            cls = self._index[row.label]
            record = metadata_record(row, split) | {"cls": cls}
            members = (
                ("jpg", image),
                ("cls", str(cls).encode()),
                ("json", json_record(record).encode()),
            )
            sample = b"".join(
                _member(f"{row.photo_id}.{ext}", data, mtime) for ext, data in members
            )
            self._write(split, sample)
            self._samples[split] += 1

    def _write(self, split: str, sample: bytes) -> None:
        out = self._files.get(split)
        if out is not None and self._sizes[split] + len(sample) > self.shard_bytes:
            _end(out, self._sizes[split])
            out = None
        if out is None:
            out = self._files[split] = open(self._shards.open(split), "wb")  # noqa: SIM115
            self._sizes[split] = 0
        out.write(sample)
        self._sizes[split] += len(sample)

    def _close_all(self) -> None:
        for out in self._files.values():
            out.close()

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        for split, out in self._files.items():
            if not out.closed:
                _end(out, self._sizes[split])
        paths = self._shards.commit()
        ctx.summary_fields["webdataset"] = {
            "shards": [p.name for p in paths],
            "samples": dict(self._samples),
        }
        return paths


def _member(name: str, data: bytes, mtime: int) -> bytes:
    header = tar_header(name, len(data), mtime, is_dir=False)
    return b"".join((header, data, bytes(-len(data) % tarfile.BLOCKSIZE)))


def _end(out: IO[bytes], written: int) -> None:
    # Two zero blocks end a tar; padded to a whole record, as tarfile does.
    end = 2 * tarfile.BLOCKSIZE
    out.write(bytes(end + -(written + end) % tarfile.RECORDSIZE))
    out.close()
