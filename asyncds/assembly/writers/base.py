"""The writer interface, and the file helpers writers share.

A writer owns one artifact (or a pair, like the split file and its subset). Assembly calls,
in registry order (``writers/__init__.py``):

- ``start(ctx, cleanup)`` once, before the ordered pass; a writer that streams a file opens it
  here with :class:`StreamedFile`;
- ``add(batch)`` for each batch of the ordered pass (the dataset's rows by path, each with its
  split), only if ``per_row`` is set: writers that need no row are not called per row;
- ``finish(ctx)`` once, after the pass, in registry order: returns the files it wrote, which
  go into ``ctx.outputs`` (and into ``dataset.tgz`` when ``archived``) for later writers.

A writer that does not apply to this config (an export nobody asked for) says so in
``wanted(ctx)`` and is skipped. Everything is blocking: assembly runs in a thread.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, ClassVar

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.dataset import RowSplit
from asyncds.files import atomic_target, write_atomic

# Control characters, and the line and paragraph separators a script element would choke on.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def plain(text: str) -> str:
    """``text`` on one line: whitespace runs become one space, control characters go (what
    the report and ATTRIBUTION.md show of a title or a name)."""
    return _CONTROL.sub("", " ".join(text.split()))


class Writer:
    """One artifact. Subclasses set the class attributes and override what they need."""

    name: ClassVar[str]  # for logs and timings
    files: ClassVar[tuple[str, ...]] = ()  # names it may write at the folder's root
    archived: ClassVar[bool] = False  # its files go into dataset.tgz
    per_row: ClassVar[bool] = False  # it is fed the ordered pass (``add``)
    phase: ClassVar[str] = "assembling"  # what the progress display says during its finish

    def wanted(self, ctx: AssemblyContext) -> bool:
        return True

    def start(self, ctx: AssemblyContext, cleanup: contextlib.ExitStack) -> None:
        """Before the pass. ``cleanup`` unwinds, with the error, if assembly fails."""

    def add(self, batch: Sequence[RowSplit]) -> None:
        """One batch of the ordered pass (only when ``per_row``)."""

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        """After the pass: write or commit the artifact; the files written."""
        raise NotImplementedError


class StreamedFile:
    """A text file written as the pass goes, which appears at ``path`` only on
    :meth:`commit` (through ``files.atomic_target``); if assembly fails first, ``cleanup``
    unwinds it and the temporary file is removed."""

    def __init__(self, path: Path, cleanup: contextlib.ExitStack) -> None:
        self.path = path
        self._stack = contextlib.ExitStack()
        # On failure the stack is unwound with the error, so atomic_target drops the
        # temporary file; after a commit this is a no-op.
        cleanup.push(self._stack.__exit__)
        tmp = self._stack.enter_context(atomic_target(path))
        self.file: IO[str] = self._stack.enter_context(
            open(tmp, "w", encoding="utf-8", newline="\n")  # noqa: SIM115 (closed by the stack)
        )

    def commit(self) -> Path:
        self._stack.close()
        return self.path


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode())


# One encoder each, built once: json.dumps with ensure_ascii=False builds a new encoder per
# call, which was the largest cost of writing the manifests (60,000 calls at 20,000 images).
json_record = json.JSONEncoder(ensure_ascii=False).encode
json_string = json.encoder.encode_basestring  # what dumps(str, ensure_ascii=False) gives


def write_json_lists(path: Path, lists: Iterable[tuple[str, Iterable[str]]]) -> None:
    """``{key: [string, ...], ...}`` written as it is produced, byte for byte what
    :func:`write_json` writes for the same mapping, without building it or its text."""
    with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("{")
        keys = 0
        for key, values in lists:
            f.write(f"{',' if keys else ''}\n {json_string(key)}: [")
            n = 0
            for value in values:
                f.write(f"{',' if n else ''}\n  {json_string(value)}")
                n += 1
            f.write("\n ]" if n else "]")
            keys += 1
        f.write("\n}\n" if keys else "}\n")
