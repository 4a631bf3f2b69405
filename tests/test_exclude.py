"""The user's fixes (issue 15): the exclude list, and good images deleted by hand.

Config parsing and the state step (``asyncds.exclude.apply_removals``) run fast; the loops
run end to end through the CLI against the emulator (marked slow).
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import yaml
from PIL import Image

from asyncds import job
from asyncds.config import (
    ClassSpec,
    Config,
    ConfigError,
    FlickrSettings,
    load_config,
    parse_config,
)
from asyncds.emulator import EMULATOR_API_KEY, EmulatorSettings, running_emulator
from asyncds.exclude import EXCLUDED_REASON, REMOVED_REASON, apply_removals, removed_elsewhere
from asyncds.state import StateStore, Status
from tests import factories
from tests.e2e import assert_clean_class_folder, images, run_cli, state_rows, write_config

BASE = "classes: [{name: cat, count: 1000}]\n"


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (80, 60), "gray").save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = _jpeg()


def parse(text: str) -> Config:
    return parse_config(yaml.safe_load(text), source="config.yaml", environ={})


# -- the config ------------------------------------------------------------------------------


def test_exclude_takes_bare_and_quoted_ids():
    config = parse(BASE + "exclude: [52841234567, '52841234568', \" 7 \", 52841234567]\n")
    assert config.exclude == frozenset({"52841234567", "52841234568", "7"})
    assert parse(BASE).exclude == frozenset()
    assert parse(BASE + "exclude:\n").exclude == frozenset()


def test_exclude_txt_beside_the_config_adds_its_ids(tmp_path: Path):
    (tmp_path / "config.yaml").write_text(BASE + "exclude: [11]\n")
    (tmp_path / "exclude.txt").write_text(
        "# photos a reviewer rejected\n12\n\n  13   # blurry\n#14\n11\n"
    )
    assert load_config(tmp_path / "config.yaml").exclude == frozenset({"11", "12", "13"})


def test_no_exclude_txt_means_no_exclusions(tmp_path: Path):
    (tmp_path / "config.yaml").write_text(BASE)
    assert load_config(tmp_path / "config.yaml").exclude == frozenset()


@pytest.mark.parametrize(
    ("value", "where", "fragment"),
    [
        ("52841234567", "exclude", "must be a list of photo ids; got 52841234567"),
        ("{a: 1}", "exclude", "got a mapping"),
        ("[true]", "exclude[0]", "got true"),
        ("[1.5]", "exclude[0]", "got 1.5"),
        ("[12, -3]", "exclude[1]", "got -3"),
        ("[0]", "exclude[0]", "got 0"),
        ("['abc']", "exclude[0]", "got 'abc'"),
        ("['0123']", "exclude[0]", "got '0123'"),
        ("['12 34']", "exclude[0]", "got '12 34'"),
        ("[[1]]", "exclude[0]", "got a list of 1 item"),
        ("[null]", "exclude[0]", "got nothing (null)"),
        ("[99999999999999999999]", "exclude[0]", "got 99999999999999999999"),
    ],
)
def test_bad_exclude_values_are_one_line_errors(value: str, where: str, fragment: str):
    with pytest.raises(ConfigError) as info:
        parse(BASE + f"exclude: {value}\n")
    message = str(info.value)
    assert message.startswith(f"config.yaml: {where}: "), message
    assert fragment in message, message
    assert "e.g. exclude: [" in message and "\n" not in message


def test_a_bad_line_of_exclude_txt_names_the_file_and_line(tmp_path: Path):
    (tmp_path / "config.yaml").write_text(BASE)
    (tmp_path / "exclude.txt").write_text("12\n# fine\nhttps://flickr.com/photos/x/13\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "config.yaml")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'exclude.txt'}: line 3: must be a Flickr photo id")
    assert "one Flickr photo id (its digits) per line" in message


# -- the state step --------------------------------------------------------------------------


def two_classes(exclude: set[str]) -> Config:
    return Config(
        classes=(ClassSpec("cat", 4, ("cat",)), ClassSpec("dog", 4, ("dog",))),
        exclude=frozenset(exclude),
    )


async def stored(out: Path) -> StateStore:
    """cat: 1-4 good (with files), 5 pending; dog: 21 and 22 good, 3 and 23 pending (3 with
    a file a killed run left, 23 without one: not a deletion)."""
    state = await StateStore.open(out / "asyncds-state.sqlite")
    for label, ids in {"cat": ["1", "2", "3", "4", "5"], "dog": ["21", "3", "22", "23"]}.items():
        await state.add_page(
            label, [factories.candidate(label, pid) for pid in ids], cursor="c", exhausted=False,
            total=9,
        )  # fmt: skip
        (out / label).mkdir(parents=True, exist_ok=True)
    for label, pid in [("cat", "1"), ("cat", "2"), ("cat", "3"), ("cat", "4"), ("dog", "21"),
                       ("dog", "22")]:  # fmt: skip
        factories.store_image(state, out, label, pid, JPEG, phash=int(pid))
    (out / "dog" / "3.jpg").write_bytes(b"left by a killed run")
    await state.flush()
    return state


def statuses(rows) -> dict[tuple[str, str], tuple[str, str]]:
    return {(r.label, r.photo_id): (r.status, r.reason) for r in rows}


async def test_removals_record_hand_deletions_and_exclusions_and_block_their_ids(tmp_path: Path):
    out = tmp_path / "out"
    state = await stored(out)
    try:
        (out / "cat" / "2.jpg").unlink()  # deleted by hand
        removals = await apply_removals(state, two_classes({"3"}), out)
        rows = statuses(await state.rows())
        assert rows[("cat", "2")] == (Status.REMOVED_BY_USER, REMOVED_REASON)
        # by photo id, in every class, good or pending; the files go
        assert rows[("cat", "3")] == (Status.EXCLUDED, EXCLUDED_REASON)
        assert rows[("dog", "3")] == (Status.EXCLUDED, EXCLUDED_REASON)
        assert not (out / "cat" / "3.jpg").exists() and not (out / "dog" / "3.jpg").exists()
        # untouched: good rows with their file, pending rows without one (not a deletion)
        assert rows[("cat", "1")][0] == rows[("dog", "21")][0] == Status.OK
        assert rows[("cat", "5")][0] == rows[("dog", "23")][0] == Status.PENDING
        assert removals.removed == {"cat": 1}
        assert (removals.excluded, removals.restored, removals.deleted) == (2, 0, 2)
        assert removals.blocked == {"3": EXCLUDED_REASON, "2": removed_elsewhere("cat")}
        assert removals.changed
        assert await state.meta("assembled") == ""  # the artifacts are out of date

        # Nothing new: nothing changes, and the ids stay blocked.
        again = await apply_removals(state, two_classes({"3"}), out)
        assert not again.changed and again.blocked == removals.blocked
        assert statuses(await state.rows()) == rows

        # A search finding a blocked id (in any class) stores it excluded, never pending.
        added = await state.add_page(
            "dog",
            [factories.candidate("dog", pid) for pid in ("2", "25")],
            cursor="d",
            exhausted=False,
            total=9,
            blocked=again.blocked,
        )
        assert [(r.photo_id, r.status, r.reason) for r in added] == [
            ("2", Status.EXCLUDED, removed_elsewhere("cat")),
            ("25", Status.PENDING, ""),
        ]

        # Taken off the list: candidates again (pending); a hand deletion stays recorded.
        later = await apply_removals(state, two_classes(set()), out)
        rows = statuses(await state.rows())
        assert rows[("cat", "3")] == rows[("dog", "3")] == (Status.PENDING, "")
        assert rows[("cat", "2")] == (Status.REMOVED_BY_USER, REMOVED_REASON)
        assert rows[("dog", "2")] == (Status.EXCLUDED, removed_elsewhere("cat"))
        assert later.restored == 2 and later.blocked == {"2": removed_elsewhere("cat")}
    finally:
        await state.close()


async def test_an_excluded_image_deleted_by_hand_counts_as_excluded(tmp_path: Path):
    out = tmp_path / "out"
    state = await stored(out)
    try:
        (out / "cat" / "4.jpg").unlink()
        removals = await apply_removals(state, two_classes({"4"}), out)
        assert statuses(await state.rows())[("cat", "4")] == (Status.EXCLUDED, EXCLUDED_REASON)
        assert removals.removed == {}
    finally:
        await state.close()


def url_id(url: str) -> str:
    return url.rsplit("/", 1)[1].split("_")[0]


async def test_search_only_leaves_excluded_ids_out_and_still_lists_count(tmp_path: Path):
    out = tmp_path / "out"
    async with running_emulator(EmulatorSettings(seed=3, tag_sizes={"cat": 60})) as emu:
        flickr = dataclasses.replace(
            FlickrSettings(), api_url=emu.api_url, calls_per_hour=360000, backoff_s=0.01
        )
        config = Config(classes=(ClassSpec("cat", 10, ("cat",)),), flickr=flickr)
        await job.search_only(config, api_key=EMULATOR_API_KEY, out_dir=out)
        listed = [url_id(u) for u in json.loads((out / "urls_data.json").read_text())["cat"]]
        excluded = dataclasses.replace(config, exclude=frozenset(listed[:2]))
        await job.search_only(excluded, api_key=EMULATOR_API_KEY, out_dir=out)
        again = [url_id(u) for u in json.loads((out / "urls_data.json").read_text())["cat"]]
    assert len(again) == 10 and again[:8] == listed[2:]
    assert not set(listed[:2]) & set(again)


# -- end to end, through the CLI -------------------------------------------------------------

ARTIFACTS = ("train_test_split.json", "metadata.jsonl", "urls_data.json", "dataset.tgz",
             "summary.json", "summary.txt", "README.md", "croissant.json")  # fmt: skip


def ids_of(out: Path, label: str) -> set[str]:
    return {name.removesuffix(".jpg") for name in images(out, label)}


def inodes(out: Path) -> dict[str, int]:
    return {name: (out / name).stat().st_ino for name in ARTIFACTS}


def assert_artifacts_list_exactly_the_folders(out: Path, classes: dict[str, int]) -> None:
    on_disk = {f"{label}/{pid}.jpg" for label in classes for pid in ids_of(out, label)}
    split = json.loads((out / "train_test_split.json").read_text())
    assert set(split["train"]) | set(split["test"]) == on_disk
    lines = (out / "metadata.jsonl").read_text().splitlines()
    assert {json.loads(line)["file_name"] for line in lines} == on_disk
    urls = json.loads((out / "urls_data.json").read_text())
    for label in classes:
        listed = {url_id(url) for url in urls[label]}
        assert listed == ids_of(out, label)
    with tarfile.open(out / "dataset.tgz") as tar:
        members = {n for n in tar.getnames() if n.endswith(".jpg") and "/" in n}  # not previews
    assert members == on_disk
    summary = json.loads((out / "summary.json").read_text())
    for label, count in classes.items():
        assert summary["classes"][label]["good"] == count


async def rerun(config: Path, out: Path, api_url: str) -> None:
    result = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=api_url)
    assert result.code == 0, result.stderr


async def assert_nothing_to_do(config: Path, out: Path, emu) -> None:
    """A rerun after the fix: no request, no artifact rewritten, the log says so."""
    served, before, log_size = (
        Counter(emu.stats.photo_ids_served),
        inodes(out),
        (out / "asyncds.log").stat().st_size,
    )
    await rerun(config, out, emu.api_url)
    assert Counter(emu.stats.photo_ids_served) == served
    assert inodes(out) == before
    assert b"is complete; nothing to do" in (out / "asyncds.log").read_bytes()[log_size:]


@pytest.mark.slow
async def test_the_exclude_loop_end_to_end(tmp_path: Path):
    """Exclude two good photos of a finished run (one bare, one quoted), rerun: both files
    gone, their rows excluded, every count full again, nothing that was good downloaded
    again, every artifact rebuilt without them; a rerun after that has nothing to do."""
    classes = {"cat": 12, "dog": 10}
    out = tmp_path / "out"
    async with running_emulator(EmulatorSettings(seed=11)) as emu:
        config = write_config(tmp_path / "config.yaml", classes)
        await rerun(config, out, emu.api_url)
        good = {label: ids_of(out, label) for label in classes}
        served = Counter(emu.stats.photo_ids_served)
        a, b = min(good["cat"]), min(good["dog"])
        before = inodes(out)

        write_config(tmp_path / "config.yaml", classes, exclude=[int(a), b])
        await rerun(config, out, emu.api_url)
        rewritten = inodes(out)
        assert all(rewritten[name] != before[name] for name in ARTIFACTS)  # every one rebuilt

        for label, count in classes.items():
            assert_clean_class_folder(out, label, count)
        assert not (out / "cat" / f"{a}.jpg").exists() and not (out / "dog" / f"{b}.jpg").exists()
        rows = {(r["label"], r["photo_id"]): r for r in state_rows(out)}
        assert (rows[("cat", a)]["status"], rows[("cat", a)]["reason"]) == (
            "excluded",
            EXCLUDED_REASON,
        )
        assert rows[("dog", b)]["status"] == "excluded"
        now = {label: ids_of(out, label) for label in classes}
        assert now["cat"] - good["cat"] and len(now["cat"] - good["cat"]) == 1
        assert now["cat"] >= good["cat"] - {a} and now["dog"] >= good["dog"] - {b}
        # Nothing that was good is downloaded again; the replacements are new.
        again = Counter(emu.stats.photo_ids_served) - served
        assert not set(again) & (good["cat"] | good["dog"]), again
        assert (now["cat"] - good["cat"]) | (now["dog"] - good["dog"]) <= set(again)
        assert_artifacts_list_exactly_the_folders(out, classes)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["classes"]["cat"]["excluded"] == summary["classes"]["dog"]["excluded"] == 1
        assert summary["totals"]["excluded"] == summary["totals"]["dropped"]["excluded"] == 2
        assert summary["totals"]["removed_by_hand"] == 0
        text = (out / "summary.txt").read_text()
        assert "removed by you" in text and "cat: 1 image excluded" in text

        await assert_nothing_to_do(config, out, emu)


@pytest.mark.slow
async def test_an_excluded_photo_is_not_downloaded_when_another_class_finds_it(tmp_path: Path):
    """``kitten`` searches the same tag as ``cat``, so its search finds every cat photo, the
    excluded one too: that one is stored as excluded for kitten and never requested again."""
    out = tmp_path / "out"
    dedup = {"cross_class": "keep-first"}  # kitten's copies of cat's images go, cat's stay
    async with running_emulator(EmulatorSettings(seed=12, tag_sizes={"cat": 200})) as emu:
        first = write_config(tmp_path / "one.yaml", {"cat": 5}, dedup=dedup)
        await rerun(first, out, emu.api_url)
        a = min(ids_of(out, "cat"))
        assert emu.stats.photo_ids_served[a] == 1

        second = write_config(
            tmp_path / "two.yaml", {"cat": 5, "kitten": 9}, dedup=dedup, exclude=[int(a)]
        )
        data = yaml.safe_load(second.read_text())
        data["classes"][1]["tags"] = ["cat"]  # the same search as cat's
        second.write_text(yaml.safe_dump(data, sort_keys=False))
        await rerun(second, out, emu.api_url)

    rows = {(r["label"], r["photo_id"]): r["status"] for r in state_rows(out)}
    assert rows[("cat", a)] == rows[("kitten", a)] == "excluded"  # kitten's search found it
    assert emu.stats.photo_ids_served[a] == 1
    assert not (out / "kitten" / f"{a}.jpg").exists() and not (out / "cat" / f"{a}.jpg").exists()
    assert_clean_class_folder(out, "cat", 5)
    assert_clean_class_folder(out, "kitten", 9)


@pytest.mark.slow
async def test_the_hand_deletion_loop_end_to_end(tmp_path: Path):
    """Delete two good images by hand, rerun: both recorded as removed by the user and
    replaced, the summary says 2 removed by hand, nothing else downloaded again, every
    artifact rebuilt without them (the config is unchanged); a rerun has nothing to do."""
    classes = {"cat": 12, "dog": 10}
    out = tmp_path / "out"
    async with running_emulator(EmulatorSettings(seed=13)) as emu:
        config = write_config(tmp_path / "config.yaml", classes)
        await rerun(config, out, emu.api_url)
        good = {label: ids_of(out, label) for label in classes}
        served = Counter(emu.stats.photo_ids_served)
        a, b = max(good["cat"]), max(good["dog"])
        (out / "cat" / f"{a}.jpg").unlink()
        (out / "dog" / f"{b}.jpg").unlink()
        before = inodes(out)

        await rerun(config, out, emu.api_url)
        rewritten = inodes(out)
        assert all(rewritten[name] != before[name] for name in ARTIFACTS)  # every one rebuilt

        for label, count in classes.items():
            assert_clean_class_folder(out, label, count)
        rows = {(r["label"], r["photo_id"]): r for r in state_rows(out)}
        assert rows[("cat", a)]["status"] == rows[("dog", b)]["status"] == "removed_by_user"
        now = {label: ids_of(out, label) for label in classes}
        assert len(now["cat"] - good["cat"]) == len(now["dog"] - good["dog"]) == 1
        again = Counter(emu.stats.photo_ids_served) - served
        assert not set(again) & (good["cat"] | good["dog"]), again
        assert_artifacts_list_exactly_the_folders(out, classes)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["totals"]["removed_by_hand"] == 2
        assert summary["classes"]["cat"]["removed_by_hand"] == 1
        assert summary["totals"]["dropped"]["removed_by_user"] == 2
        assert summary["totals"]["missing_files"] == 0
        text = (out / "summary.txt").read_text()
        assert "cat: 1 image removed by hand" in text and "dog: 1 image removed by hand" in text

        await assert_nothing_to_do(config, out, emu)
