import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asyncds.files import (
    OutputLock,
    OutputLocked,
    image_relpath,
    remove_temp_files,
    temp_path,
    write_atomic,
)
from asyncds.flickr import Candidate
from asyncds.state import Outcome, StateStore, Status
from tests.factories import candidate


def cats(*ids: str) -> list[Candidate]:
    return [candidate("cat", pid) for pid in ids]


async def test_pages_are_numbered_in_search_order_and_deduplicated(tmp_path: Path):
    async with await StateStore.open(tmp_path / "s.sqlite") as state:
        first = await state.add_page(
            "cat",
            cats("1", "2"),
            cursor="c1",
            exhausted=False,
            total=9,
        )
        again = await state.add_page(
            "cat",
            cats("2", "3"),
            cursor="c2",
            exhausted=True,
            total=9,
        )
        assert [(r.photo_id, r.seq) for r in first] == [("1", 1), ("2", 2)]
        assert [(r.photo_id, r.seq) for r in again] == [("3", 3)]
        search = await state.search_state("cat")
        assert (search.cursor, search.exhausted, search.total) == ("c2", True, 9)
        assert {r.photo_id for r in await state.rows("cat")} == {"1", "2", "3"}
        # the same photo under another class is another candidate
        assert (
            len(
                await state.add_page(
                    "dog", [candidate("dog", "1")], cursor="d", exhausted=False, total=1
                )
            )
            == 1
        )


async def test_outcomes_are_buffered_then_committed_in_one_batch(tmp_path: Path):
    path = tmp_path / "s.sqlite"
    state = await StateStore.open(path, batch_size=2)
    await state.add_page(
        "cat",
        cats("1", "2", "3"),
        cursor="c",
        exhausted=False,
        total=3,
    )
    assert (
        state.record(Outcome("cat", "1", Status.OK, sha256="ab", phash="00ff", path="cat/1.jpg"))
        is False
    )
    assert state.record(Outcome("cat", "2", Status.CORRUPT, "truncated JPEG")) is True
    assert (await state.counts())["cat"][Status.PENDING] == 3  # nothing committed yet
    await state.flush()
    counts = (await state.counts())["cat"]
    assert counts[Status.OK] == 1 and counts[Status.CORRUPT] == 1 and counts[Status.PENDING] == 1
    state.record(Outcome("cat", "3", Status.UNAVAILABLE, "placeholder"))
    await state.close()  # close flushes
    async with await StateStore.open(path) as reopened:
        rows = await reopened.rows("cat")
        assert [r.status for r in rows] == [Status.OK, Status.CORRUPT, Status.UNAVAILABLE]
        assert rows[0].path == "cat/1.jpg" and rows[1].reason == "truncated JPEG"
        await reopened.set_statuses([("cat", "1", Status.DUPLICATE, "same image as cat/9.jpg")])
        assert (await reopened.rows("cat", Status.DUPLICATE))[0].photo_id == "1"


async def test_stream_reads_in_chunks_on_another_thread_in_each_order(tmp_path: Path):
    labels = ("zebra", "cat", "émeu", "cat 2", "😀")  # BINARY collation vs Python str order
    async with await StateStore.open(tmp_path / "s.sqlite") as state:
        for label in labels:
            ids = ("30", "4", "100")
            await state.add_page(
                label, [candidate(label, pid) for pid in ids], cursor="c", exhausted=False, total=3
            )
            state.record(Outcome(label, "30", Status.OK, path=image_relpath(label, "30")))
            state.record(Outcome(label, "4", Status.DUPLICATE, "same image as x"))
            # no stored path: ordered as the path it would have
        await state.flush()
        everything = await state.rows()

        stream = state.stream(chunk_size=2)
        read = await asyncio.to_thread(list, stream)  # not the store's thread
        assert read == everything  # by class, then rank, every field
        assert list(stream) == read  # re-iterable: each iteration reads afresh

        by_path = await asyncio.to_thread(list, state.stream(order="path", chunk_size=2))
        relpaths = [r.path or image_relpath(r.label, r.photo_id) for r in by_path]
        assert relpaths == sorted(relpaths) and len(relpaths) == 15

        by_rank = [(r.seq, r.label) for r in state.stream(order="rank", chunk_size=4)]
        assert by_rank == sorted(by_rank)

        ok = state.stream(statuses={Status.OK, Status.DUPLICATE}, label="émeu", chunk_size=1)
        assert [(r.photo_id, r.status) for r in ok] == [
            ("30", Status.OK),
            ("4", Status.DUPLICATE),
        ]
        state.record(Outcome("cat", "100", Status.CORRUPT))
        assert len(list(state.stream(statuses={Status.CORRUPT}))) == 0  # not committed yet
        await state.flush()
        assert [r.photo_id for r in state.stream(statuses={Status.CORRUPT})] == ["100"]


def test_write_atomic_leaves_no_partial_file(tmp_path: Path):
    target = tmp_path / "a.jpg"
    write_atomic(target, b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in tmp_path.iterdir()] == ["a.jpg"]


@pytest.mark.parametrize("planted", ["leftover", "symlink", "hardlink"])
def test_write_atomic_makes_a_fresh_file_whatever_sits_at_its_temporary_name(
    tmp_path: Path, planted: str
):
    # The temporary name is created exclusively; what is found there is removed, never
    # followed (a link to a file elsewhere) nor truncated (a hard link to one).
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not yours")
    folder = tmp_path / "cat"
    folder.mkdir()
    target = folder / "9.jpg"
    tmp = Path(temp_path(target))
    if planted == "leftover":
        tmp.write_bytes(b"half an image from a killed run")
    elif planted == "symlink":
        tmp.symlink_to(outside)
    else:
        os.link(outside, tmp)
    write_atomic(target, b"image")
    assert target.read_bytes() == b"image"
    assert outside.read_bytes() == b"not yours"
    assert sorted(p.name for p in folder.iterdir()) == ["9.jpg"]
    assert not target.is_symlink() and target.stat().st_nlink == 1


def test_temp_files_of_a_killed_run_are_removed(tmp_path: Path):
    folder = tmp_path / "cat"
    folder.mkdir()
    (folder / ".part-123-9.jpg").write_bytes(b"half")
    (folder / "9.jpg").write_bytes(b"whole")
    assert remove_temp_files([folder, tmp_path / "missing"]) == 1
    assert [p.name for p in folder.iterdir()] == ["9.jpg"]


def test_lock_refuses_a_second_holder_and_is_released_by_the_kernel(tmp_path: Path):
    with OutputLock(tmp_path):
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from pathlib import Path; from asyncds.files import OutputLock\n"
                "try:\n    OutputLock(Path(sys.argv[1])).acquire()\nexcept Exception as e:\n"
                "    print(e); sys.exit(3)",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
        )
        assert other.returncode == 3
        assert f"pid {os.getpid()}" in other.stdout and "--output-dir" in other.stdout
    with OutputLock(tmp_path):  # released: we can take it again
        pass
    lock = OutputLock(tmp_path)
    lock.acquire()
    with pytest.raises(OutputLocked):
        OutputLock(tmp_path).acquire()
    lock.release()
