"""report.html and the preview contact sheets, read back without a browser (the browser test is
tests/test_report_browser.py): counts, inline data, escaping, no network, size at scale."""

from __future__ import annotations

import asyncio
import functools
import html
import io
import json
import random
import re
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from asyncds.assembly import assemble_outputs, write_outputs
from asyncds.assembly.writers.preview import PREVIEW_CELL, PREVIEW_COLS, preview_name
from asyncds.assembly.writers.report import (
    AUTHOR_BYTES,
    REPORT_FILE,
    TITLE_BYTES,
    collided_path,
    cut,
    script_json,
)
from asyncds.config import ClassSpec, Config, ConfigError, SplitSpec, load_config
from asyncds.files import image_relpath
from asyncds.imaging import contact_sheet
from asyncds.pool import ImagePool
from asyncds.state import CandidateRow, Outcome, StateStore, Status
from asyncds.worker import SheetJob, render_sheets
from tests import factories
from tests.test_assemble import STATS, build_state, jpeg, make_config

# An author is cut to 50 bytes in the page: the markup that matters comes first.
HOSTILE = "<img src=x onerror=alert(2)></script><script>alert(1)</script> & \"q\" 'a' <!--"
FLICKR_PAGE = "https://www.flickr.com/photos/"


def report_data(page: str) -> dict:
    """The page's inline data, as its script reads it."""
    m = re.search(r'<script type="application/json" id="asyncds-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


def table_counts(page: str) -> dict[tuple[str, str], int]:
    """(class, key) -> the number shown in the summary table ("" is the totals row)."""
    found = {}
    for attr, key, value in re.findall(
        r'<td (data-class="[^"]*"|data-total) data-key="([^"]+)">(\d+)</td>', page
    ):
        label = html.unescape(attr[len('data-class="') : -1]) if attr != "data-total" else ""
        found[(label, key)] = int(value)
    return found


def expected_counts(summary: dict) -> dict[tuple[str, str], int]:
    keys = ("requested", "good", "train", "test", "dropped_total")
    reasons = [r for r, n in summary["totals"]["dropped"].items() if n]
    expected = {}
    for label, c in [*summary["classes"].items(), ("", summary["totals"])]:
        for key in keys:
            expected[(label, key)] = c[key]
        for reason in reasons:
            expected[(label, f"dropped.{reason}")] = c["dropped"].get(reason, 0)
    return expected


@pytest.fixture
async def out(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    state = await build_state(out)
    try:
        await assemble_outputs(state, make_config(out), out, STATS)
    finally:
        await state.close()
    return out


async def test_the_report_shows_the_summarys_counts_and_every_image(out: Path):
    page = (out / REPORT_FILE).read_text(encoding="utf-8")
    summary = json.loads((out / "summary.json").read_text())
    assert table_counts(page) == expected_counts(summary)
    data = report_data(page)
    split = json.loads((out / "train_test_split.json").read_text())
    shown = {
        (row[6] or image_relpath(cls["label"], row[0])): "test" if row[4] else "train"
        for cls in data["classes"]
        for row in cls["rows"]
    }
    assert shown == {p: name for name in ("train", "test") for p in split[name]}
    assert [c["label"] for c in data["classes"]] == list(summary["classes"])
    metadata = {
        r["photo_id"]: r for r in map(json.loads, (out / "metadata.jsonl").read_text().splitlines())
    }
    for cls in data["classes"]:
        for pid, license_id, author, owner, _, title, _ in cls["rows"]:
            m = metadata[pid]
            assert (license_id, author, owner, title) == (
                m["license"],
                m["ownername"],
                m["owner"],
                m["title"],
            )
            assert data["licenses"][str(license_id)] == m["license_name"]
    # Licenses per class, as the summary counts them.
    for name, entry in summary["licenses"].items():
        for label, n in entry["classes"].items():
            cell = f'data-class="{html.escape(label)}" data-license="{entry["id"]}">{n}<'
            assert cell in page, (name, label)


async def test_the_report_and_previews_go_into_the_archive(out: Path):
    with tarfile.open(out / "dataset.tgz") as tar:
        names = tar.getnames()
        assert tar.extractfile(REPORT_FILE).read() == (out / REPORT_FILE).read_bytes()
    for label in ("cat", "dog", "sports car"):
        assert preview_name(label) in names
        assert (out / preview_name(label)).is_file()
        assert f'href="{preview_name(label).replace(" ", "%20")}"' in (out / REPORT_FILE).read_text(
            encoding="utf-8"
        )


async def test_the_page_requests_nothing_from_the_network(out: Path):
    page = (out / REPORT_FILE).read_text(encoding="utf-8")
    urls = re.findall(r"https?://[^\s\"'<>)]*", page)
    assert urls and all(u == FLICKR_PAGE for u in urls), urls
    # No external script, style, font or frame; a policy that forbids any request.
    assert not re.search(r"<(script|link|iframe|object|embed)[^>]+(src|href)=", page)
    assert "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page


def hostile_rows() -> list[CandidateRow]:
    rows = []
    for i, label in enumerate(("cat", "a&b 'c'")):
        rows.append(
            CandidateRow(
                label=label,
                photo_id=str(100 + i),
                seq=0,
                url="https://live.staticflickr.com/1/x_m.jpg",
                width=20,
                height=16,
                owner=f"1@N0{i}",
                ownername=HOSTILE,
                title=HOSTILE + "\u2028line",
                license=4,
                date_upload=0,
                status=Status.OK,
                path=image_relpath(label, str(100 + i)),
            )
        )
    return rows


def write_hostile(out: Path) -> Path:
    rows = hostile_rows()
    for row in rows:
        (out / row.label).mkdir(parents=True, exist_ok=True)
        (out / row.path).write_bytes(jpeg(int(row.photo_id)))
    config = Config(
        classes=(ClassSpec("cat", 1, ("cat",)), ClassSpec("a&b 'c'", 1, ("ab",))),
        split=SplitSpec(seed=1, type="absolute", test_size=0),
        output_dir=out,
    )
    write_outputs(rows, config, out, STATS)
    return out / REPORT_FILE


def test_user_text_is_escaped_everywhere(tmp_path: Path):
    page = write_hostile(tmp_path).read_text(encoding="utf-8")
    assert HOSTILE not in page
    for fragment in ("</script><script>", "<img src=x", "<!--", "\u2028"):
        assert fragment not in page
    assert page.count("</script>") == 2  # the data's and the script's own
    # The class name, HTML-escaped in the markup; the data reads back exactly.
    assert "a&amp;b &#x27;c&#x27;" in page
    data = report_data(page)
    assert [c["label"] for c in data["classes"]] == ["cat", "a&b 'c'"]
    row = data["classes"][0]["rows"][0]
    assert row[2] == HOSTILE[:AUTHOR_BYTES] and row[5].startswith(HOSTILE)


def test_text_is_cut_to_bytes_at_a_character_boundary():
    assert cut("  a\n b\x00c ", 50) == "a bc"
    assert cut("é" * 60, 50) == "é" * 25
    assert cut("日本" * 30, 50) == "日本" * 8  # 48 bytes: a third character would pass 50
    assert len(cut("x" * 300, TITLE_BYTES)) == TITLE_BYTES


def test_script_json_leaves_no_markup_and_reads_back_the_same():
    text = json.dumps({"a": "</script><!--<b>&"})
    safe = script_json(text)
    assert "<" not in safe and ">" not in safe and "&" not in safe
    assert json.loads(safe) == json.loads(text)


def test_the_image_a_drop_collided_with_comes_from_its_reason():
    assert collided_path("cat", "5", "same image as cat/1.jpg") == "cat/1.jpg"
    assert collided_path("cat", "5", "near-duplicate (distance 3) of dog/7.jpg") == "dog/7.jpg"
    assert collided_path("dog", "5", "photo also found under cat") == "cat/5.jpg"
    note = " (an image also found under another class)"
    assert collided_path("cat", "5", f"same image as cat/1.jpg{note}") == "cat/1.jpg"
    assert collided_path("cat", "5", "because corrupt") == ""


async def test_dropped_near_duplicates_are_shown_with_the_image_they_collided_with(
    tmp_path: Path,
):
    out = tmp_path / "out"
    state = await build_state(out)
    try:
        await state.add_page(
            "dog",
            [factories.candidate("dog", "250"), factories.candidate("dog", "251")],
            cursor="d",
            exhausted=False,
            total=4,
        )
        state.record(
            Outcome(
                "dog", "250", Status.NEAR_DUPLICATE, "near-duplicate (distance 2) of cat/101.jpg"
            )
        )
        state.record(Outcome("dog", "251", Status.CROSS_CLASS, "same image as cat/999.jpg"))
        await assemble_outputs(state, make_config(out), out, STATS)
    finally:
        await state.close()
    data = report_data((out / REPORT_FILE).read_text(encoding="utf-8"))
    # Exact duplicates need no look: cat/104 (a duplicate) is not listed.
    assert data["dropped"] == [
        ["dog", "250", "near_duplicate", "near-duplicate (distance 2) of cat/101.jpg", "1@N01",
         "cat/101.jpg", 1],
        ["dog", "251", "cross_class", "same image as cat/999.jpg", "1@N01", "cat/999.jpg", 0],
    ]  # fmt: skip
    assert data["dropped_total"] == data["dropped_shown"] == 2


@pytest.mark.slow
def test_three_classes_of_20000_images_stay_within_15_mb(tmp_path: Path):
    out = tmp_path / "out"
    labels = ("cat", "dog", "sports car")
    rows = []
    for label in labels:
        (out / label).mkdir(parents=True)
        for i in range(20_000):
            pid = str(53_000_000_000 + i)
            rows.append(
                CandidateRow(
                    label=label,
                    photo_id=pid,
                    seq=i,
                    url=f"https://live.staticflickr.com/65535/{pid}_0123456789_m.jpg",
                    width=240,
                    height=180,
                    owner="123456789@N05",
                    ownername="Somebody With A Long Name",
                    title="a long title, as Flickr titles can be " * 4,
                    license=i % 11,
                    date_upload=0,
                    status=Status.OK,
                    path=image_relpath(label, pid),
                )
            )
            (out / label / f"{pid}.jpg").write_bytes(b"jpeg")
    config = Config(
        classes=tuple(ClassSpec(label, 20_000, (label,)) for label in labels),
        split=SplitSpec(seed=1, type="proportional", test_size=0.2),
        output_dir=out,
    )
    write_outputs(rows, config, out, STATS)
    size = (out / REPORT_FILE).stat().st_size
    assert size < 15_000_000, size
    data = report_data((out / REPORT_FILE).read_text(encoding="utf-8"))
    assert [len(c["rows"]) for c in data["classes"]] == [20_000] * 3


# -- the contact sheets -------------------------------------------------------------------------


def photo(seed: int, size: tuple[int, int] = (240, 180)) -> bytes:
    rng = random.Random(seed)
    buf = io.BytesIO()
    Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3))).save(buf, "JPEG")
    return buf.getvalue()


def test_a_contact_sheet_is_a_grid_and_a_bad_image_a_grey_cell():
    images = [photo(i) for i in range(10)] + [None, b"not a jpeg"]
    data = contact_sheet(images, cols=4, cell=50)
    assert contact_sheet(images, cols=4, cell=50) == data  # deterministic
    with Image.open(io.BytesIO(data)) as sheet:
        assert sheet.format == "JPEG" and sheet.size == (4 * 52 + 2, 3 * 52 + 2)
        grey = sheet.convert("RGB").getpixel((2 + 2 * 52 + 25, 2 + 2 * 52 + 25))
    assert all(abs(c - 96) < 8 for c in grey), grey


def test_render_sheets_reads_the_files_and_writes_atomically(tmp_path: Path):
    (tmp_path / "a.jpg").write_bytes(photo(1))
    job = SheetJob(
        str(tmp_path / "p.jpg"), (str(tmp_path / "a.jpg"), str(tmp_path / "gone")), 2, 40
    )
    (size,) = render_sheets([job])
    assert (tmp_path / "p.jpg").stat().st_size == size
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".part-")] == []


async def test_previews_are_a_seeded_sample_rendered_in_the_pool(tmp_path: Path):
    out = tmp_path / "out"
    state = await build_state(out)
    try:
        async with ImagePool(1) as pool:
            await assemble_outputs(state, make_config(out), out, STATS, pool=pool)
            assert pool.requests >= 1  # the sheets went to the worker
        first = {p.name: p.read_bytes() for p in out.glob("preview-*.jpg")}
        rows = await state.rows()
    finally:
        await state.close()
    assert sorted(first) == ["preview-cat.jpg", "preview-dog.jpg", "preview-sports car.jpg"]
    page = (out / REPORT_FILE).read_bytes()
    # In this thread, from the rows in another order: the same bytes (no clock in the page).
    random.Random(3).shuffle(rows)
    exhausted = {"sports car": True}  # as the state says, for the same warnings
    await asyncio.to_thread(
        functools.partial(write_outputs, exhausted=exhausted), rows, make_config(out), out, STATS
    )
    assert {p.name: p.read_bytes() for p in out.glob("preview-*.jpg")} == first
    assert (out / REPORT_FILE).read_bytes() == page
    with Image.open(out / "preview-cat.jpg") as sheet:
        assert sheet.size == (3 * (PREVIEW_CELL + 2) + 2, PREVIEW_CELL + 4)  # 3 images, one row
    assert PREVIEW_COLS == 8


async def test_a_preview_of_a_class_gone_from_the_dataset_is_removed(out: Path):
    (out / "preview-owl.jpg").write_bytes(b"old")
    rows_config = make_config(out)
    async with await StateStore.open(out / "asyncds-state.sqlite") as state:
        rows = await state.rows()
    write_outputs(rows, rows_config, out, STATS)
    assert not (out / "preview-owl.jpg").exists()


def test_a_class_named_like_a_preview_is_refused(tmp_path: Path):
    config = tmp_path / "c.yaml"
    config.write_text("classes:\n  - name: Preview-cat.JPG\n    count: 3\n")
    with pytest.raises(ConfigError, match="preview"):
        load_config(config)


def test_fresh_deletes_the_previews_and_no_preview_may_be_a_link(tmp_path: Path):
    from asyncds.cli import written_names
    from asyncds.job import fresh_targets

    config = make_config(tmp_path)
    for name in ("preview-cat.jpg", "preview-gone.jpg", "report.html"):
        (tmp_path / name).write_bytes(b"x")
    targets = {p.name for p in fresh_targets(config, tmp_path)}
    assert {"preview-cat.jpg", "preview-gone.jpg", "report.html"} <= targets
    assert {"preview-cat.jpg", "preview-sports car.jpg", "report.html"} <= set(
        written_names(config)
    )
