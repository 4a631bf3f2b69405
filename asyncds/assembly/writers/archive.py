"""``dataset.tgz``: the dataset's images, their class folders and every file an earlier writer
marked ``archived`` (split files, metadata, summaries, ...), one gzip stream of sorted members.

It runs last (the end of the registry) because it packs what the others wrote."""

from __future__ import annotations

import gzip
import heapq
import os
import tarfile
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.writers.base import Writer
from asyncds.files import atomic_target, safe_relpath

ARCHIVE_FILE = "dataset.tgz"
# dataset.tgz is a gzip stream of stored (level 0) blocks: JPEGs do not compress (239 MB in,
# 239 MB out at level 6, for 8 s of a 20,000-image run); it stays a valid .tgz for every tool.
ARCHIVE_LEVEL = 0
_ARCHIVE_BUFFER = 1 << 20
# Members are read without following links: a link planted in a class folder is not packed.
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
_ARCHIVE_CHUNK = 1 << 18  # a file larger than this (metadata.jsonl) is copied in chunks


class ArchiveWriter(Writer):
    name = "archive"
    files = (ARCHIVE_FILE,)
    phase = "archiving"

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        target = ctx.out_dir / ARCHIVE_FILE
        # Artifacts sit at the folder's root; merged by name with the images' sorted paths.
        artifacts = sorted(
            out.path.relative_to(ctx.out_dir).as_posix() for out in ctx.outputs if out.archived
        )
        files = heapq.merge(ctx.dataset.paths(), artifacts)
        write_archive(target, ctx.out_dir, files, ctx.dataset.folders())
        return [target]


def write_archive(
    path: Path, out_dir: Path, files: Iterable[str], folders: Collection[str] = ()
) -> None:
    """``dataset.tgz`` of ``files`` and ``folders`` (relative paths), streamed one at a time.

    ``files`` must come sorted, each once, and is read once as it comes (it may be a cursor):
    one out of order is a ValueError. ``folders`` (the class folders: few) get a directory
    entry each. Every member is stored in sorted order under its relative name, owned by
    uid/gid 0 with no user names and plain permissions, whoever ran it.

    The gzip stream is level :data:`ARCHIVE_LEVEL` and the tar headers are built here rather
    than by ``tarfile.TarFile.add`` (see :func:`tar_header`): at 20,000 images that took 8 s
    at level 6 for no smaller file, and ``add`` alone costs about 0.2 ms per member.
    """

    def checked(names: Iterable[str]) -> Iterator[tuple[str, bool]]:
        last = ""
        for name in names:
            if name <= last:
                raise ValueError(f"archive members out of order: {name!r} after {last!r}")
            last = name
            yield safe_relpath(name), False

    dirs = sorted({safe_relpath(d) for d in folders})
    entries = heapq.merge(checked(files), ((d, True) for d in dirs))
    written = 0
    with (
        atomic_target(path) as tmp,
        open(tmp, "wb", buffering=_ARCHIVE_BUFFER) as raw,
        # The name only goes into the gzip header: the final one, not the temporary one.
        gzip.GzipFile(path.name, "wb", compresslevel=ARCHIVE_LEVEL, fileobj=raw) as gz,
    ):
        for name, is_folder in entries:
            source = os.path.join(out_dir, name)
            if is_folder:
                written += gz.write(tar_header(name, 0, int(os.stat(source).st_mtime), is_dir=True))
                continue
            fd = os.open(source, _READ_FLAGS)  # plain os calls: 20,000 of them
            try:
                st = os.fstat(fd)
                header = tar_header(name, st.st_size, int(st.st_mtime), is_dir=False)
                padding = bytes(-st.st_size % tarfile.BLOCKSIZE)
                if st.st_size <= _ARCHIVE_CHUNK:  # an image: one read, one write
                    data = os.read(fd, st.st_size + 1)
                    written += gz.write(b"".join((header, data, padding)))
                    copied = len(data)
                else:  # a large artifact (metadata.jsonl), in chunks
                    written += gz.write(header)
                    copied = 0
                    while chunk := os.read(fd, _ARCHIVE_CHUNK):
                        written += gz.write(chunk)
                        copied += len(chunk)
                    written += gz.write(padding)
            finally:
                os.close(fd)
            if copied != st.st_size:
                raise RuntimeError(f"{source} changed while it was being archived")
        # Two zero blocks end the archive; tarfile pads it to a whole record, and so do we.
        end = 2 * tarfile.BLOCKSIZE
        gz.write(bytes(end + -(written + end) % tarfile.RECORDSIZE))


def tar_header(name: str, size: int, mtime: int, *, is_dir: bool) -> bytes:
    """The 512-byte header ``tarfile`` writes (PAX format) for a member owned by uid/gid 0
    with no user names, mode 644 (755 for a folder): built directly for the usual short ASCII
    name, a tenth of the cost; any other name goes through ``tarfile.TarInfo``."""
    if is_dir:
        name += "/"
    mode = 0o755 if is_dir else 0o644
    if len(name) > 100 or not name.isascii() or not (0 <= size < 8**11 and 0 <= mtime < 8**11):
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, mtime, mode
        info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    encoded = name.encode("ascii")
    size_field, mtime_field = b"%011o\0" % size, b"%011o\0" % mtime
    # The checksum is the sum of the header's bytes, the fixed ones summed once (_TAR_FIXED).
    fixed, head, tail = _TAR_FIXED[is_dir]
    checksum = fixed + sum(encoded) + sum(size_field) + sum(mtime_field)
    return b"".join(
        (encoded.ljust(100, b"\0"), head, size_field, mtime_field, b"%06o\0 " % checksum, tail)
    )


def _tar_fixed(is_dir: bool) -> tuple[int, bytes, bytes]:
    """For :func:`tar_header`: the sum of a header's fixed bytes (the checksum field counted as
    spaces), and those bytes before and after the size, mtime and checksum fields."""
    head = b"%07o\0" % (0o755 if is_dir else 0o644) + b"0000000\0" * 2  # mode, uid, gid
    tail = b"".join(
        (
            tarfile.DIRTYPE if is_dir else tarfile.REGTYPE,
            bytes(100),  # linkname
            tarfile.POSIX_MAGIC,
            bytes(64 + 16 + 167),  # uname, gname, devmajor, devminor, prefix, padding
        )
    )
    return sum(head) + sum(b" " * 8) + sum(tail), head, tail


_TAR_FIXED = {False: _tar_fixed(False), True: _tar_fixed(True)}
