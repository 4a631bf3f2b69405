"""What the optional exports (``export:`` in the config, ``--export`` on the command line)
share: the writer base that is wanted only when asked, the check that their libraries are
installed, and :class:`ShardSet`, numbered shard files committed together.

Exports are derived data: written at the folder's root (a folder would be one more class to
torchvision's ImageFolder), never archived, and named so that Hugging Face's automatic file
discovery takes none of them for a split: no name holds ``train``, ``test``, ``val``, ``dev``
or ``eval`` between separators (``-._ 0-9``), which is why a split is spelt ``trainset`` /
``testset`` in a shard's name.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.writers.base import Writer
from asyncds.files import atomic_target

EXTRA_HINT = "pip install 'asyncds[export]'"
SPLITS = ("train", "test")
# The split as a shard's name spells it (see the module docstring).
SPLIT_IN_NAME = {"train": "trainset", "test": "testset"}


class ExportUnavailable(RuntimeError):
    """An export was asked for but a library it needs is not installed."""


class ExportWriter(Writer):
    """A writer that runs only when its ``export`` name is asked for; ``files`` are glob
    patterns of everything it writes, ``requires`` the modules it imports."""

    export: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()
    phase = "exporting"

    def wanted(self, ctx: AssemblyContext) -> bool:
        return self.export in ctx.config.export

    @classmethod
    def present(cls, out_dir: Path) -> bool:
        """Whether a finished assembly left this export's files (a rerun then skips it)."""
        return any(next(out_dir.glob(pattern), None) is not None for pattern in cls.files)


def export_writers() -> list[type[ExportWriter]]:
    from asyncds.assembly.writers import WRITERS  # lazily: the registry imports this module

    return [w for w in WRITERS if isinstance(w, type) and issubclass(w, ExportWriter)]


def missing_libraries(exports: Iterable[str]) -> str | None:
    """One line naming what is missing and the extra to install, or None when all is there."""
    wanted = set(exports)
    missing: list[str] = []
    for writer in export_writers():
        if writer.export not in wanted:
            continue
        for module in writer.requires:
            try:
                importlib.import_module(module)
            except ImportError:
                missing.append(f"{writer.export} needs {module}")
    if not missing:
        return None
    return f"{'; '.join(missing)}, which is not installed: {EXTRA_HINT}"


def check_libraries(exports: Iterable[str]) -> None:
    """Raise :class:`ExportUnavailable` before a run starts if an export cannot be written."""
    problem = missing_libraries(exports)
    if problem:
        raise ExportUnavailable(problem)


def exports_present(out_dir: Path, exports: Iterable[str]) -> bool:
    """Whether every asked-for export's files are in ``out_dir``."""
    wanted = set(exports)
    return all(w.present(out_dir) for w in export_writers() if w.export in wanted)


class ShardSet:
    """Numbered files (``<prefix>-<split>-000000.<ext>``) written one after another, which all
    appear together only on :meth:`commit`: a failed assembly leaves the previous shards as
    they were and no partial one. Each shard is written to its temporary name; ``cleanup``
    removes them all if assembly fails."""

    def __init__(self, out_dir: Path, prefix: str, ext: str, cleanup: contextlib.ExitStack) -> None:
        self.out_dir = out_dir
        self.prefix = prefix
        self.ext = ext
        self._stack = contextlib.ExitStack()
        cleanup.push(self._stack.__exit__)
        self.paths: list[Path] = []

    @property
    def pattern(self) -> str:
        return f"{self.prefix}-*.{self.ext}"

    def open(self, split: str) -> str:
        """A new shard of ``split``: the temporary path to write it to."""
        index = sum(1 for p in self.paths if p.name.startswith(self._head(split)))
        path = self.out_dir / f"{self._head(split)}{index:06d}.{self.ext}"
        self.paths.append(path)
        return self._stack.enter_context(atomic_target(path))

    def _head(self, split: str) -> str:
        return f"{self.prefix}-{SPLIT_IN_NAME[split]}-"

    def commit(self) -> list[Path]:
        """Move every shard into place, then delete the shards of an earlier, larger run."""
        self._stack.close()
        keep = {p.name for p in self.paths}
        for old in self.out_dir.glob(self.pattern):
            if old.name not in keep and not old.name.startswith("."):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(old)
        return sorted(self.paths)
