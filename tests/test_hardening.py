"""The output folder as a hostile user leaves it: links, unusable paths, a damaged state, a
full disk, a folder shared with a running job. Each case ends with one line and exit 1, and
nothing is written outside the folder (see docs/reliability.md)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from asyncds.cli import EXIT_FAILED, EXIT_OK, main
from asyncds.emulator import EmulatorSettings, EmulatorThread
from asyncds.files import LOCK_FILE, OutputDirError, OutputLock
from asyncds.state import STATE_FILE
from tests.e2e import images, run_cli, start_cli, wait_for_images, write_config


@pytest.fixture
def emulator(monkeypatch):
    with EmulatorThread(EmulatorSettings(seed=1, tag_sizes={"cat": 300, "dog": 300})) as emu:
        monkeypatch.setenv("API_KEY", "emulator-key")
        monkeypatch.setenv("FLICKR_API_URL", emu.api_url)
        yield emu


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "Traceback" not in lines[0]
    return lines[0]


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "precious.txt"
    victim.write_text("do not touch\n")
    return victim


def test_a_symlinked_lock_is_refused_and_its_target_untouched(tmp_path, capsys, emulator):
    out = tmp_path / "out"
    out.mkdir()
    victim = _victim(tmp_path)
    (out / LOCK_FILE).symlink_to(victim)
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    assert main([str(config), "--output-dir", str(out), "-q"]) == EXIT_FAILED
    line = _one_error_line(capsys)
    assert "symbolic link" in line and LOCK_FILE in line and "remove the link" in line
    assert victim.read_text() == "do not touch\n"
    assert not (out / "cat").exists()


def test_the_lock_itself_never_follows_a_link(tmp_path):
    victim = _victim(tmp_path)
    (tmp_path / LOCK_FILE).symlink_to(victim)
    with pytest.raises(OutputDirError, match="symbolic link"):
        OutputLock(tmp_path).acquire()
    assert victim.read_text() == "do not touch\n"


def test_a_symlinked_class_folder_is_refused(tmp_path, capsys, emulator):
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "cat").symlink_to(elsewhere, target_is_directory=True)
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    assert main([str(config), "--output-dir", str(out), "-q"]) == EXIT_FAILED
    line = _one_error_line(capsys)
    assert str(out / "cat") in line and "symbolic link" in line
    assert list(elsewhere.iterdir()) == []


def test_a_symlinked_log_is_refused_and_its_target_untouched(tmp_path, capsys, emulator):
    out = tmp_path / "out"
    out.mkdir()
    victim = _victim(tmp_path)
    (out / "asyncds.log").symlink_to(victim)
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    assert main([str(config), "--output-dir", str(out), "-q"]) == EXIT_FAILED
    assert "asyncds.log" in _one_error_line(capsys)
    assert victim.read_text() == "do not touch\n"


@pytest.mark.parametrize("artifact", ["summary.txt", "dataset.tgz", STATE_FILE])
def test_a_symlinked_artifact_or_state_is_refused(tmp_path, capsys, emulator, artifact):
    out = tmp_path / "out"
    out.mkdir()
    victim = _victim(tmp_path)
    (out / artifact).symlink_to(victim)
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    assert main([str(config), "--output-dir", str(out), "-q"]) == EXIT_FAILED
    assert artifact in _one_error_line(capsys)
    assert victim.read_text() == "do not touch\n"


def test_a_link_planted_in_a_class_folder_is_neither_read_nor_packed(tmp_path, emulator):
    """A resumed run adopts files it finds; a link there is replaced by a real download."""
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    assert main([str(config), "--output-dir", str(out), "-q", "--search-only"]) == EXIT_OK
    urls = json.loads((out / "urls_data.json").read_text())["cat"]
    first_id = urls[0].rsplit("/", 1)[1].split("_")[0]
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"secret bytes, not an image of this dataset")
    (out / "cat").mkdir()
    (out / "cat" / f"{first_id}.jpg").symlink_to(secret)
    assert main([str(config), "--output-dir", str(out), "-q"]) == EXIT_OK
    stored = out / "cat" / f"{first_id}.jpg"
    if stored.exists() or stored.is_symlink():
        assert not stored.is_symlink()
    assert secret.read_bytes() == b"secret bytes, not an image of this dataset"
    assert b"secret bytes" not in (out / "dataset.tgz").read_bytes()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        ("file", "is not a folder"),
        ("under_file", "is a file"),
        ("read_only", "not writable"),
    ],
)
def test_an_unusable_output_folder_is_one_line_not_a_traceback(
    tmp_path, capsys, emulator, make, expected
):
    if make == "read_only" and os.geteuid() == 0:
        out = Path("/proc/asyncds-out")  # root writes anywhere a mode allows; /proc it cannot
        expected = "cannot create the output folder"
    elif make == "read_only":
        parent = tmp_path / "ro"
        parent.mkdir()
        out = parent
        parent.chmod(0o555)
    elif make == "file":
        out = tmp_path / "a-file"
        out.write_text("x")
    else:
        (tmp_path / "a-file").write_text("x")
        out = tmp_path / "a-file" / "out"
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    assert main([str(config), "--output-dir", str(out), "-q"]) == EXIT_FAILED
    assert expected in _one_error_line(capsys)


def test_dev_null_as_output_folder_is_one_line(tmp_path, capsys, emulator):
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    assert main([str(config), "--output-dir", "/dev/null/x", "-q"]) == EXIT_FAILED
    assert "/dev/null/x" in _one_error_line(capsys)


def test_a_corrupt_state_names_the_file_and_the_way_out(tmp_path, capsys, emulator):
    out = tmp_path / "out"
    out.mkdir()
    (out / STATE_FILE).write_bytes(b"this is not SQLite" * 100)
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    assert main([str(config), "--output-dir", str(out), "-q"]) == EXIT_FAILED
    line = _one_error_line(capsys)
    assert str(out / STATE_FILE) in line and "--fresh" in line and "move it aside" in line
    # and --fresh is indeed the way out
    assert main([str(config), "--output-dir", str(out), "-q", "--fresh"]) == EXIT_OK
    assert len(images(out, "cat")) == 10


def test_search_only_waits_for_no_one_and_refuses_a_held_folder(tmp_path, capsys, emulator):
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", {"cat": 10})
    with OutputLock(out):  # as a running job holds it
        code = main([str(config), "--output-dir", str(out), "-q", "--search-only"])
    assert code == EXIT_FAILED
    assert "another asyncds run" in _one_error_line(capsys)
    assert not (out / "urls_data.json").exists()


def test_folders_of_removed_classes_are_listed_then_pruned(tmp_path, capsys, emulator):
    out = tmp_path / "out"
    both = write_config(tmp_path / "both.yaml", {"cat": 10, "dog": 10})
    assert main([str(both), "--output-dir", str(out), "-q"]) == EXIT_OK
    (out / ".hidden").mkdir()  # ImageFolder counts hidden folders as classes too
    capsys.readouterr()
    cats = write_config(tmp_path / "cats.yaml", {"cat": 10})
    assert main([str(cats), "--output-dir", str(out), "-q"]) == EXIT_OK
    err = capsys.readouterr().err
    assert ".hidden, dog" in err and "--prune" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["unconfigured_folders"] == [".hidden", "dog"]
    assert ".hidden, dog" in (out / "summary.txt").read_text()

    assert main([str(cats), "--output-dir", str(out), "-q", "--prune"]) == EXIT_OK
    err = capsys.readouterr().err
    assert f"--prune: deleting {out / 'dog'}" in err
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["cat"]
    assert json.loads((out / "summary.json").read_text())["unconfigured_folders"] == []
    assert len(images(out, "cat")) == 10


# -- a full disk (a real one: a small tmpfs, so root only) ---------------------------------


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def _resize(path: Path, size: str) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs root to mount a small tmpfs (CI runs as root)")
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "1m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.slow
async def test_a_full_disk_mid_download_ends_with_one_line_and_resume_finishes(
    tmp_path, small_disk
):
    from asyncds.emulator import running_emulator

    out = small_disk / "out"
    config = write_config(tmp_path / "c.yaml", {"cat": 200})
    async with running_emulator(EmulatorSettings(seed=3)) as emu:
        result = await asyncio.wait_for(
            run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url), 120
        )
        assert result.code == EXIT_FAILED, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert "No space left on device" in lines[0] and str(out) in lines[0]
        assert "free some space" in lines[0] and "resume" in lines[0]
        _resize(small_disk, "64m")
        again = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
        assert again.code == EXIT_OK, again.stderr
        assert len(images(out, "cat")) == 200


@pytest.mark.slow
async def test_a_full_disk_while_archiving_names_the_archive(tmp_path, small_disk):
    from asyncds.emulator import running_emulator

    _resize(small_disk, "64m")
    out = small_disk / "out"
    config = write_config(tmp_path / "c.yaml", {"cat": 60})
    async with running_emulator(EmulatorSettings(seed=3)) as emu:
        first = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
        assert first.code == EXIT_OK, first.stderr
        archive = out / "dataset.tgz"
        size = archive.stat().st_size
        archive.unlink()  # the rerun must write it again, on a disk without room for it
        used = shutil.disk_usage(small_disk).used
        _resize(small_disk, str(used + size // 2))
        result = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
        assert result.code == EXIT_FAILED, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(archive) in lines[0], lines
        assert "No space left on device" in lines[0]
        assert not list(out.glob(".part-*")), "no half-written archive is left"
        _resize(small_disk, "64m")
        again = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
        assert again.code == EXIT_OK, again.stderr
        assert archive.stat().st_size == size


async def test_search_only_under_a_running_job_is_refused(tmp_path):
    """The audit's case: --search-only rewrote urls_data.json under a running job."""
    from asyncds.emulator import running_emulator

    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", {"cat": 300}, download={"concurrency": 2})
    settings = EmulatorSettings(seed=2, tag_sizes={"cat": 400})
    async with running_emulator(settings) as emu:
        job = await start_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
        try:
            await wait_for_images(out, ["cat"], at_least=1)
            second = await run_cli(
                str(config), "--output-dir", str(out), "--search-only", api_url=emu.api_url
            )
            assert second.code == EXIT_FAILED
            assert "another asyncds run" in second.stderr
        finally:
            job.terminate()
            await job.wait()


def test_a_worker_never_adopts_a_link_in_a_class_folder(tmp_path):
    """Adoption (a resumed candidate's file) reads without following links; the link goes."""
    from asyncds.imaging import ImageOptions
    from asyncds.worker import MISSING, ImageJob, run_batch

    secret = _victim(tmp_path)
    link = tmp_path / "123.jpg"
    link.symlink_to(secret)
    [result] = run_batch([ImageJob(str(link))], ImageOptions())
    assert result.status == MISSING and "link" in result.reason
    assert not link.is_symlink() and secret.read_text() == "do not touch\n"
