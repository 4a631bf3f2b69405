"""asyncds.job: when a rerun re-assembles the artifacts, and when it leaves them alone."""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import sqlite3
from pathlib import Path

import pytest

from asyncds import job
from asyncds.config import ClassSpec, Config, FlickrSettings, SplitSpec
from asyncds.emulator import EMULATOR_API_KEY, EmulatorSettings, running_emulator
from asyncds.imaging import HASH_VERSION, phash_to_hex, stored_phash
from asyncds.state import STATE_FILE


def identities(out: Path) -> dict[str, int]:
    """The inode of each artifact: an atomic rewrite gives a file a new one."""
    names = ("train_test_split.json", "metadata.jsonl", "dataset.tgz", "summary.json")
    return {name: (out / name).stat().st_ino for name in names}


def cat_config(api_url: str, out: Path, count: int) -> Config:
    """One class, ``cat``, of ``count`` images from the emulator at ``api_url``."""
    return Config(
        classes=(ClassSpec("cat", count, ("cat",)),),
        split=SplitSpec(seed=1, type="absolute", test_size=5),
        flickr=dataclasses.replace(
            FlickrSettings(), api_url=api_url, calls_per_hour=360000, backoff_s=0.01
        ),
        output_dir=out,
    )


def digests(out: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*/*.jpg")}


async def test_a_new_assembly_version_reassembles_without_downloading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = tmp_path / "out"
    async with running_emulator(EmulatorSettings(seed=3, tag_sizes={"cat": 60})) as emu:
        config = cat_config(emu.api_url, out, 30)

        async def rerun() -> None:
            await job.create_dataset(config, api_key=EMULATOR_API_KEY, out_dir=out, quiet=True)

        await rerun()
        first, images = identities(out), emu.stats.total_image_requests
        await rerun()  # finished and unchanged: nothing is rewritten
        assert identities(out) == first

        # A version whose artifacts differ for the same state: they are written again, from
        # the stored images.
        monkeypatch.setattr(job, "ASSEMBLY_VERSION", job.ASSEMBLY_VERSION + 1)
        await rerun()
        again = identities(out)
        assert all(again[name] != first[name] for name in first)
        assert emu.stats.total_image_requests == images
        await rerun()
        assert identities(out) == again


async def test_a_folder_from_an_older_hash_version_is_rehashed_without_downloading(
    tmp_path: Path,
):
    """A state whose hashes an older version computed (another phash definition): the rerun
    re-derives every stored image's hash from its file, downloads nothing and keeps the files."""
    out = tmp_path / "out"
    async with running_emulator(EmulatorSettings(seed=5, tag_sizes={"cat": 80})) as emu:
        config = cat_config(emu.api_url, out, 40)
        await job.create_dataset(config, api_key=EMULATOR_API_KEY, out_dir=out, quiet=True)
        files = digests(out)
        assert len(files) == 40
        with sqlite3.connect(out / STATE_FILE) as db:  # what an older version left behind
            db.execute("UPDATE candidates SET phash = '0123456789abcdef' WHERE status = 'ok'")
            db.execute("DELETE FROM meta WHERE key = 'hash_version'")
        images = emu.stats.total_image_requests

        await job.create_dataset(config, api_key=EMULATOR_API_KEY, out_dir=out, quiet=True)

        assert emu.stats.total_image_requests == images
        assert digests(out) == files
        with sqlite3.connect(out / STATE_FILE) as db:
            rows = db.execute("SELECT path, phash FROM candidates WHERE status = 'ok'").fetchall()
            (version,) = db.execute("SELECT value FROM meta WHERE key = 'hash_version'").fetchone()
        assert version == str(HASH_VERSION) and len(rows) == 40
        for path, phash in rows:
            assert phash == phash_to_hex(stored_phash((out / path).read_bytes()))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc tuning")
def test_malloc_arenas_are_capped_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert job.limit_malloc_arenas() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert job.limit_malloc_arenas() is False
