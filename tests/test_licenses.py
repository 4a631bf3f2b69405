"""Licenses users can act on: counts per license in the summary, the All Rights Reserved
warning, ATTRIBUTION.md (content, grouping, escaping, determinism, archive, memory), and a run
against the emulator with ``flickr.license: open``."""

from __future__ import annotations

import contextlib
import io
import json
import random
import tarfile
import tracemalloc
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from PIL import Image

from asyncds.assembly import RunStats, assemble_outputs, write_outputs
from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.writers.attribution import (
    AttributionWriter,
    attribution_line,
    markdown_text,
)
from asyncds.config import LICENSE_PRESETS, ClassSpec, Config, SplitSpec
from asyncds.emulator import EmulatorSettings, running_emulator
from asyncds.state import CandidateRow, Outcome, StateStore, Status
from tests import factories
from tests.e2e import run_cli, write_config

STATS = RunStats(wall_time_s=1.0, api_calls=2, images_fetched=7)
CLASSES = (ClassSpec("cat", 3, ("cat",)), ClassSpec("dog", 2, ("dog",)))
HOSTILE_TITLE = "*bold* [x](http://evil.example) <script>alert(1)</script>\nline two & `code` $x$"
# label -> [(photo id, license id, status, title, author)]; every ok row gets a file
PLAN = {
    "cat": [
        ("1", 0, Status.OK, HOSTILE_TITLE, "a_b|c ~d~"),
        ("2", 4, Status.OK, "Sleepy", "Jane Doe"),
        ("3", 11, Status.OK, "", ""),  # untitled, no owner name: the NSID credits it
        ("4", 4, Status.OK, "surplus", "Nobody"),  # count is 3: not in the dataset
    ],
    "dog": [
        ("21", 0, Status.OK, "Rex", "Bob"),
        ("22", 42, Status.OK, "Future", "Ann"),  # an id Flickr may add one day
        ("23", 9, Status.UNAVAILABLE, "gone", "Ann"),
    ],
}


async def build_state(out: Path) -> StateStore:
    state = await StateStore.open(out / "asyncds-state.sqlite")
    for label, items in PLAN.items():
        candidates = [
            factories.candidate(
                label, pid, license=lic, title=title, ownername=author, owner=f"{pid}@N01"
            )
            for pid, lic, _, title, author in items
        ]
        await state.add_page(label, candidates, cursor="c", exhausted=True, total=len(items))
        (out / label).mkdir(parents=True, exist_ok=True)
        for i, (pid, _, status, _, _) in enumerate(items):
            if status != Status.OK:
                state.record(Outcome(label, pid, status, "because"))
                continue
            factories.store_image(state, out, label, pid, jpeg(i), i)
    await state.flush()
    return state


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20 + seed, 16), (seed * 40 % 256, 90, 30)).save(buf, "JPEG")
    return buf.getvalue()


def make_config(out: Path) -> Config:
    return Config(
        classes=CLASSES, split=SplitSpec(seed=1, type="absolute", test_size=1), output_dir=out
    )


@pytest.fixture
async def assembled(tmp_path: Path) -> tuple[Path, tuple[str, ...], list[CandidateRow]]:
    out = tmp_path / "out"
    state = await build_state(out)
    try:
        report = await assemble_outputs(state, make_config(out), out, STATS)
        rows = await state.rows()
    finally:
        await state.close()
    return out, report.warnings, rows


# -- the summary ---------------------------------------------------------------------------------


async def test_summary_counts_images_per_license_and_class(assembled):
    out, _, _ = assembled
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["licenses"] == {
        "All Rights Reserved": {"id": 0, "images": 2, "classes": {"cat": 1, "dog": 1}},
        "CC BY 2.0": {"id": 4, "images": 1, "classes": {"cat": 1, "dog": 0}},  # not the surplus
        "CC BY 4.0": {"id": 11, "images": 1, "classes": {"cat": 1, "dog": 0}},
        "unknown license 42": {"id": 42, "images": 1, "classes": {"cat": 0, "dog": 1}},
    }
    assert list(summary)[-2:] == ["licenses", "warnings"]
    total = sum(entry["images"] for entry in summary["licenses"].values())
    assert total == summary["totals"]["good"] == 5
    # The same names and ids as metadata.jsonl, image for image.
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    by_name = Counter((r["license_name"], r["license"]) for r in records)
    assert by_name == {(name, e["id"]): e["images"] for name, e in summary["licenses"].items()}


async def test_all_rights_reserved_images_are_warned_about_with_the_setting(assembled):
    out, warnings, _ = assembled
    warning = (
        "All Rights Reserved: 2 images of 5 in the dataset (license 0, not licensed for reuse); "
        "flickr.license: open (or an id list without 0) excludes them, with --fresh for this "
        "folder"
    )
    assert warning in warnings
    assert warning in json.loads((out / "summary.json").read_text())["warnings"]
    text = (out / "summary.txt").read_text(encoding="utf-8")
    assert f"  - {warning}\n" in text
    block = text.split("images by license:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [line.split() for line in block] == [
        ["license", "id", "images"],
        ["All", "Rights", "Reserved", "0", "2", "(cat", "1,", "dog", "1)"],
        ["CC", "BY", "2.0", "4", "1", "(cat", "1)"],
        ["CC", "BY", "4.0", "11", "1", "(cat", "1)"],
        ["unknown", "license", "42", "42", "1", "(dog", "1)"],
    ]


async def test_an_open_dataset_has_no_warning(tmp_path: Path):
    out = tmp_path / "out"
    rows = [r for r in await _rows(out) if r.license != 0]
    report = write_outputs(rows, make_config(out), out, STATS)
    assert not [w for w in report.warnings if "All Rights Reserved" in w]
    assert "All Rights Reserved" not in (out / "summary.json").read_text()


async def _rows(out: Path) -> list[CandidateRow]:
    state = await build_state(out)
    try:
        return await state.rows()
    finally:
        await state.close()


# -- ATTRIBUTION.md ------------------------------------------------------------------------------

PREAMBLE = (
    "# Attribution\n\nThe 5 images of this dataset are photos from Flickr, each under its "
    "author's license. Each line credits one image: its title (linked to its Flickr page), its "
    "author, its license (linked to the license) and its file in this dataset. Licenses that "
    "require credit (every CC BY license) are honoured by shipping this file with the images, "
    "or by showing an image's line wherever the image is shown.\n"
)
ARR_URL = (
    "https://www.flickrhelp.com/hc/en-us/articles/"
    "10710266545556-Using-Flickr-images-shared-by-other-members"
)
EXPECTED = PREAMBLE + (
    "\n## All Rights Reserved (2 images)\n\n"
    "The owners reserve all rights: these photos are not licensed for reuse. Ask each owner for "
    "permission, or leave them out (`flickr.license: open`, then `--fresh`). "
    f"License: <{ARR_URL}>\n\n"
    r"- [\*bold\* \[x\](http://evil.example) \<script\>alert(1)\</script\> line two \& \`code\` "
    r"\$x\$](https://www.flickr.com/photos/1@N01/1) by a\_b\|c \~d\~, "
    f"[All Rights Reserved]({ARR_URL}) (cat/1.jpg)\n"
    f"- [Rex](https://www.flickr.com/photos/21@N01/21) by Bob, [All Rights Reserved]({ARR_URL})"
    " (dog/21.jpg)\n"
    "\n## CC BY 2.0 (1 image)\n\n"
    "Credit the author (keep these lines with the images). "
    "License: <https://creativecommons.org/licenses/by/2.0/>\n\n"
    "- [Sleepy](https://www.flickr.com/photos/2@N01/2) by Jane Doe, "
    "[CC BY 2.0](https://creativecommons.org/licenses/by/2.0/) (cat/2.jpg)\n"
    "\n## CC BY 4.0 (1 image)\n\n"
    "Credit the author (keep these lines with the images). "
    "License: <https://creativecommons.org/licenses/by/4.0/>\n\n"
    "- [Untitled](https://www.flickr.com/photos/3@N01/3) by 3@N01, "
    "[CC BY 4.0](https://creativecommons.org/licenses/by/4.0/) (cat/3.jpg)\n"
    "\n## Other licenses (1 image)\n\n"
    "License ids asyncds does not know: read the terms on each photo's page.\n\n"
    "- [Future](https://www.flickr.com/photos/22@N01/22) by Ann, unknown license 42 "
    "(dog/22.jpg)\n"
)


async def test_attribution_lists_each_image_once_grouped_by_license(assembled):
    out, _, _ = assembled
    text = (out / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert text == EXPECTED
    # One line per dataset image, and only those (the surplus cat/4 is not in the dataset).
    split = json.loads((out / "train_test_split.json").read_text())
    files = sorted(line.rsplit(" (", 1)[1][:-1] for line in text.splitlines() if line[:2] == "- ")
    assert files == sorted(split["train"] + split["test"])


def test_markdown_text_fast_path_changes_nothing():
    # Text that needs no work is returned as it is; every other text goes the full way. Both
    # must give what the full way gives, for any mix of specials, controls and whitespace.
    from asyncds.assembly.writers import attribution, base

    def full(text: str) -> str:
        cleaned = base.plain(text)  # one line, no control characters
        return attribution._MARKDOWN_SPECIAL.sub(r"\\\1", cleaned)

    pool = "ab Zé1. -'\"" + "\\`*_[]<>&~|$" + "\t\n\r\x0b\x0c\x1c\x1f\x00\x7f\x85\xa0\u2003\u3000"
    rng = random.Random(5)
    for _ in range(20_000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 8)))
        assert markdown_text(text) == full(text), repr(text)
    for plain in ("Sunset over the bay", "Jane Doe", "cat/123.jpg", "CC BY 2.0", "été à Paris"):
        assert attribution._NEEDS_WORK.search(plain) is None
        assert markdown_text(plain) is plain


def test_markdown_in_titles_and_authors_is_escaped():
    assert markdown_text("a\tb\r\n  c\x00d") == "a b cd"  # one line, no control characters
    assert markdown_text(r"[t](u) <b> & \ * _ ` ~ | $") == (
        r"\[t\](u) \<b\> \& \\ \* \_ \` \~ \| \$"
    )
    row = CandidateRow(
        label="cat",
        photo_id="7)x",
        seq=1,
        url="",
        width=1,
        height=1,
        owner="o w)n@N01",
        ownername="",
        title="](javascript:alert(1))",
        license=4,
        date_upload=0,
        path="cat/7.jpg",
    )
    line = attribution_line(row)
    # The link target cannot be broken out of: the API's owner and id are percent-encoded.
    assert line.startswith(
        r"- [\](javascript:alert(1))](https://www.flickr.com/photos/o%20w%29n@N01/7%29x) by "
        "o w)n@N01, "
    )
    assert line.count("\n") == 1


async def test_attribution_is_byte_identical_on_rerun_and_in_the_archive(assembled):
    out, _, rows = assembled
    first = (out / "ATTRIBUTION.md").read_bytes()
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)  # the order rows come in does not matter
    write_outputs(shuffled, make_config(out), out, STATS)
    assert (out / "ATTRIBUTION.md").read_bytes() == first
    with tarfile.open(out / "dataset.tgz") as tar:
        member = tar.extractfile("ATTRIBUTION.md")
        assert member is not None and member.read() == first


def _peak_of_attribution(n: int, out: Path) -> int:
    """Peak Python memory (bytes) of the attribution writer fed ``n`` rows in batches."""
    # What the writer reads of an AssemblyContext.
    ctx = cast(
        AssemblyContext,
        SimpleNamespace(out_dir=out, classes=(), summary_fields={}, warnings=[]),
    )
    writer = AttributionWriter()
    tracemalloc.start()
    try:
        with contextlib.ExitStack() as cleanup:
            writer.start(ctx, cleanup)
            for start in range(0, n, 256):
                writer.add([(long_row(i), "train") for i in range(start, min(n, start + 256))])
            writer.finish(ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len((out / "ATTRIBUTION.md").read_text().splitlines()) > n
    return peak


def long_row(i: int) -> CandidateRow:
    return CandidateRow(
        label="cat",
        photo_id=str(i),
        seq=i,
        url="",
        width=1,
        height=1,
        owner=f"{i}@N01",
        ownername="Somebody With A Long Name",
        title=f"{i} " + "a long title, as Flickr titles can be " * 6,
        license=i % 17,
        date_upload=0,
        path=f"cat/{i:06d}.jpg",
    )


@pytest.mark.slow  # 17 s under tracemalloc; test_assemble's memory test covers it at 4,000 rows
def test_attribution_memory_is_flat_at_50000_images(tmp_path: Path):
    (tmp_path / "small").mkdir()
    (tmp_path / "large").mkdir()
    small = _peak_of_attribution(5_000, tmp_path / "small")
    large = _peak_of_attribution(50_000, tmp_path / "large")
    assert large < small * 1.25 + 64 * 1024, f"{small} B -> {large} B"


# -- end to end ----------------------------------------------------------------------------------


@pytest.mark.slow
async def test_an_open_run_against_the_emulator_has_only_open_licenses(tmp_path: Path):
    classes = {"cat": 40, "dog": 30}
    config = write_config(tmp_path / "c.yaml", classes, flickr={"license": "open"})
    out = tmp_path / "out"
    async with running_emulator(EmulatorSettings(seed=11)) as emu:
        result = await run_cli(str(config), "--output-dir", str(out), "-q", api_url=emu.api_url)
    assert result.code == 0, result.stderr
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert len(records) == sum(classes.values())
    found = {r["license"] for r in records}
    assert found <= set(LICENSE_PRESETS["open"])
    assert len(found) > 2, "the emulator mixes licenses: a filter that did nothing would show"
    summary = json.loads((out / "summary.json").read_text())
    assert {e["id"] for e in summary["licenses"].values()} == found
    assert sum(e["images"] for e in summary["licenses"].values()) == len(records)
    assert not [w for w in summary["warnings"] if "All Rights Reserved" in w]
    attribution = (out / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert sum(line.startswith("- [") for line in attribution.splitlines()) == len(records)
    assert "## All Rights Reserved" not in attribution
    with tarfile.open(out / "dataset.tgz") as tar:
        assert "ATTRIBUTION.md" in tar.getnames()
