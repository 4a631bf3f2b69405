"""``train_test_split.json`` and, with a ``subset`` configured, ``train_test_split_subset.json``:
``{"train": [path, ...], "test": [...]}``, paths sorted, read from the dataset index."""

from __future__ import annotations

from pathlib import Path

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.writers.base import Writer, write_json_lists

SPLIT_FILE = "train_test_split.json"
SUBSET_FILE = "train_test_split_subset.json"
_SPLITS = ("train", "test")


class SplitWriter(Writer):
    name = "split"
    files = (SPLIT_FILE, SUBSET_FILE)
    archived = True

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        dataset = ctx.dataset
        written = [ctx.out_dir / SPLIT_FILE]
        write_json_lists(written[0], [(n, dataset.paths(n)) for n in _SPLITS])
        subset = ctx.out_dir / SUBSET_FILE
        if ctx.subset is not None:
            write_json_lists(subset, [(n, dataset.paths(n, subset=True)) for n in _SPLITS])
            written.append(subset)
        else:
            # A subset file from an earlier configuration would no longer match this split.
            subset.unlink(missing_ok=True)
        return written
