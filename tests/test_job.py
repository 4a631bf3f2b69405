"""asyncds.job: when a rerun re-assembles the artifacts, and when it leaves them alone."""

from __future__ import annotations

import dataclasses
import platform
from pathlib import Path

import pytest

from asyncds import job
from asyncds.config import ClassSpec, Config, FlickrSettings, SplitSpec
from asyncds.emulator import EMULATOR_API_KEY, EmulatorSettings, running_emulator


def identities(out: Path) -> dict[str, int]:
    """The inode of each artifact: an atomic rewrite gives a file a new one."""
    names = ("train_test_split.json", "metadata.jsonl", "dataset.tgz", "summary.json")
    return {name: (out / name).stat().st_ino for name in names}


async def test_a_new_assembly_version_reassembles_without_downloading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    out = tmp_path / "out"
    async with running_emulator(EmulatorSettings(seed=3, tag_sizes={"cat": 60})) as emu:
        config = Config(
            classes=(ClassSpec("cat", 30, ("cat",)),),
            split=SplitSpec(seed=1, type="absolute", test_size=5),
            flickr=dataclasses.replace(
                FlickrSettings(), api_url=emu.api_url, calls_per_hour=360000, backoff_s=0.01
            ),
            output_dir=out,
        )

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


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc tuning")
def test_malloc_arenas_are_capped_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert job.limit_malloc_arenas() is True
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert job.limit_malloc_arenas() is False
