"""asyncds.assembly: selection, seeded splits, and every artifact written from a real state."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import random
import subprocess
import tarfile
import tracemalloc
from pathlib import Path, PurePosixPath

import pytest
from PIL import Image

from asyncds.assembly import (
    DROP_REASONS,
    AssemblyReport,
    RunStats,
    assemble_outputs,
    write_outputs,
)
from asyncds.assembly.dataset import DatasetIndex, SplitCounts, relpath, seeded_key, subset_count
from asyncds.assembly.writers import WRITERS, Writer
from asyncds.assembly.writers.archive import tar_header, write_archive
from asyncds.assembly.writers.base import StreamedFile
from asyncds.config import ClassSpec, Config, SplitSpec, SubsetSpec
from asyncds.dedup import apply_dedup
from asyncds.files import TEMP_MARKER, UnsafePathError, image_relpath, safe_relpath
from asyncds.flickr import Candidate
from asyncds.state import CandidateRow, Outcome, StateStore, Status
from tests import factories

ARTIFACTS = {
    "ATTRIBUTION.md",
    "train_test_split.json",
    "metadata.jsonl",
    "summary.txt",
    "summary.json",
    "README.md",
    "croissant.json",
    "report.html",
    "preview-cat.jpg",
    "preview-dog.jpg",
    "preview-sports car.jpg",
}
METADATA_FIELDS = [
    "file_name",
    "label",
    "split",
    "photo_id",
    "owner",
    "ownername",
    "title",
    "license",
    "license_name",
    "photo_page",
    "url",
    "width",
    "height",
    "sha256",
]


def paths(label: str, n: int, start: int = 1) -> list[str]:
    return [f"{label}/{i}.jpg" for i in range(start, start + n)]


# -- selection --------------------------------------------------------------------------------


def indexed(selected: dict[str, list[str]], labels: list[str] | None = None) -> DatasetIndex:
    """A DatasetIndex holding ``selected`` (label -> paths, ranked in list order)."""
    index = DatasetIndex(labels or list(selected))
    for label, ps in selected.items():
        for rank, path in enumerate(ps, 1):
            index.add(label, rank, path)
    return index


def split_of(index: DatasetIndex) -> dict[str, list[str]]:
    return {name: list(index.paths(name)) for name in ("train", "test")}


def test_keep_first_keeps_the_lowest_ranks_of_each_class_in_any_order():
    ranked = [("cat", 4, "cat/a.jpg"), ("cat", 1, "cat/b.jpg"), ("cat", 6, "cat/e.jpg")]
    ranked += [("cat", 7, "cat/g.jpg"), ("owl", 1, "owl/h.jpg"), ("dog", 2, "dog/x.jpg")]
    random.Random(0).shuffle(ranked)
    with DatasetIndex(["dog", "cat"]) as index:
        for label, seq, path in ranked:
            index.add(label, seq, path)
        index.keep_first({"dog": 5, "cat": 3})  # owl is not configured: forgotten
        assert list(index.paths()) == ["cat/a.jpg", "cat/b.jpg", "cat/e.jpg", "dog/x.jpg"]
        assert (index.count("cat"), index.count("dog"), index.count("owl")) == (3, 1, 0)
        assert index.folders() == ["cat", "dog"]


# -- splits -----------------------------------------------------------------------------------


def test_split_is_seeded_and_independent_of_input_order():
    spec = SplitSpec(seed=42, type="absolute", test_size=3)
    selected = {"cat": paths("cat", 10), "dog": paths("dog", 8)}
    with indexed(selected) as index:
        counts = index.split(spec)
        split = split_of(index)
    # a golden value: SHA-256 keys are the same in every run, process and machine
    cat_test = [p for p in split["test"] if p.startswith("cat/")]
    assert cat_test == sorted(sorted(paths("cat", 10), key=lambda p: seeded_key("42", p))[:3])
    assert cat_test == ["cat/4.jpg", "cat/6.jpg", "cat/9.jpg"]
    for seed in range(4):
        rng = random.Random(seed)
        shuffled = {label: rng.sample(ps, len(ps)) for label, ps in selected.items()}
        with indexed(dict(reversed(list(shuffled.items()))), ["cat", "dog"]) as other:
            other.split(spec)
            assert split_of(other) == split
    assert split["train"] == sorted(split["train"]) and split["test"] == sorted(split["test"])
    assert set(split["train"]) | set(split["test"]) == {p for ps in selected.values() for p in ps}
    assert not set(split["train"]) & set(split["test"])
    assert counts == SplitCounts({"cat": (7, 3), "dog": (5, 3)})
    assert (counts.train, counts.test) == (12, 6)
    with indexed(selected) as other:
        other.split(dataclasses.replace(spec, seed=43))
        assert split_of(other)["test"] != split["test"]


def test_short_class_rule_in_an_absolute_split_and_its_warning():
    spec = SplitSpec(seed=1, type="absolute", test_size=5)
    selected = {"cat": paths("cat", 9), "dog": paths("dog", 5), "fox": paths("fox", 1), "owl": []}
    with indexed(selected) as index:
        split = index.split(spec)
    assert split.counts == {"cat": (4, 5), "dog": (3, 2), "fox": (1, 0), "owl": (0, 0)}
    text = "\n".join(split.warnings)
    assert (
        "dog: only 5 images, not more than test_size 5: half go to test (2 test, 3 train)" in text
    )
    assert "fox: only 1 image," in text
    assert "owl: no images" in text
    assert "cat" not in text


@pytest.mark.parametrize("test_size", [0.2, 20])
def test_proportional_split_as_fraction_or_percent(test_size: float):
    spec = SplitSpec(seed=3, type="proportional", test_size=test_size)
    selected = {"cat": paths("cat", 25), "dog": paths("dog", 10)}
    with indexed(selected) as index:
        assert index.split(spec).counts == {"cat": (20, 5), "dog": (8, 2)}
        split = split_of(index)
    other = SplitSpec(seed=3, type="proportional", test_size=0.2 if test_size == 20 else 20)
    with indexed(selected) as index:
        index.split(other)
        assert split_of(index) == split


def test_subset_takes_a_seeded_share_of_each_split_and_class():
    selected = {"cat": paths("cat", 30), "dog": paths("dog", 11)}
    spec = SplitSpec(seed=42, type="absolute", test_size=5)
    with indexed(selected) as index:
        index.split(spec)
        split = split_of(index)
        counts = index.subset(SubsetSpec(percentage=10, seed=7))
        subset = {name: list(index.paths(name, subset=True)) for name in ("train", "test")}
        # cat: 10% of 25 train is 2.5 -> 3 (halves up); of 5 test, 0.5 -> 1; dog: one each
        assert counts.counts == {"cat": (3, 1), "dog": (1, 1)}
        assert set(subset["train"]) <= set(split["train"])
        assert set(subset["test"]) <= set(split["test"])
        assert subset["train"] == sorted(subset["train"])
        index.subset(SubsetSpec(10, 8))
        assert list(index.paths("train", subset=True)) != subset["train"]
    reordered = {label: ps[::-1] for label, ps in reversed(selected.items())}
    with indexed(reordered, ["cat", "dog"]) as index:
        index.split(spec)
        index.subset(SubsetSpec(10, 7))
        assert [list(index.paths(n, subset=True)) for n in ("train", "test")] == [
            subset["train"],
            subset["test"],
        ]


def test_the_archive_refuses_files_out_of_order(tmp_path: Path):
    (tmp_path / "cat").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "cat" / name).write_bytes(b"x")
    with pytest.raises(ValueError, match="out of order"):
        write_archive(tmp_path / "d.tgz", tmp_path, ["cat/b.jpg", "cat/a.jpg"], ["cat"])
    assert not (tmp_path / "d.tgz").exists()
    write_archive(tmp_path / "d.tgz", tmp_path, ["cat/a.jpg", "cat/b.jpg"], ["cat"])
    with tarfile.open(tmp_path / "d.tgz") as tar:
        assert tar.getnames() == ["cat", "cat/a.jpg", "cat/b.jpg"]


@pytest.mark.parametrize(
    ("name", "size", "mtime", "is_dir"),
    [
        ("cat/53012345678.jpg", 12_345, 1_764_633_600, False),
        ("sports car/1.jpg", 0, 0, False),
        ("cat", 0, 1_764_633_600, True),
        ("train_test_split.json", 8**11 - 1, 8**11 - 1, False),
        ("chat/énorme.jpg", 10, 5, False),  # not ASCII: through tarfile
        ("x" * 99 + "/1.jpg", 10, 5, False),  # longer than 100: through tarfile
        ("big.bin", 8**11, 5, False),  # past 8 GiB: a PAX size
    ],
)
def test_tar_headers_are_the_bytes_tarfile_writes(name: str, size: int, mtime: int, is_dir: bool):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o755 if is_dir else 0o644
    info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    expected = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    assert tar_header(name, size, mtime, is_dir=is_dir) == expected


def test_the_archive_is_a_gzip_tar_that_gnu_tar_extracts(tmp_path: Path):
    out = tmp_path / "out"
    (out / "cat").mkdir(parents=True)
    files = {"cat/1.jpg": b"\xff\xd8" + bytes(range(256)) * 40, "cat/2.jpg": b"", "m.json": b"{}"}
    files["big.jsonl"] = b"x" * (3 * (1 << 18) + 7)  # copied in several chunks
    for name, data in files.items():
        (out / name).write_bytes(data)
    write_archive(tmp_path / "d.tgz", out, sorted(files), ["cat"])
    raw = (tmp_path / "d.tgz").read_bytes()
    assert len(gzip.decompress(raw)) % tarfile.RECORDSIZE == 0
    target = tmp_path / "x"
    target.mkdir()
    subprocess.run(["tar", "-xzf", str(tmp_path / "d.tgz"), "-C", str(target)], check=True)
    extracted = {p.relative_to(target).as_posix(): p for p in target.rglob("*")}
    assert {name: p.read_bytes() for name, p in extracted.items() if p.is_file()} == files
    assert extracted["cat"].is_dir()


def test_subset_count_rounds_half_up_and_keeps_one():
    assert [subset_count(n, 10) for n in (0, 1, 4, 5, 14, 15, 25, 100)] == [0, 1, 1, 1, 1, 2, 3, 10]
    assert subset_count(7, 100) == 7
    assert subset_count(3, 0.5) == 1


def test_safe_relpath_rejects_escapes():
    assert safe_relpath("cat/1.jpg") == "cat/1.jpg"
    for bad in ("", "/etc/passwd", "../x.jpg", "cat/../../x", "cat//1.jpg", "./cat", "a\\b"):
        with pytest.raises(UnsafePathError):
            safe_relpath(bad)


# -- a real state and a real output folder ------------------------------------------------------

CLASSES = (
    ClassSpec("cat", 3, ("cat", "kitten")),
    ClassSpec("dog", 2, ("dog",)),
    ClassSpec("sports car", 4, ("sports car", "car")),
)


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    rng = random.Random(seed)
    Image.new("RGB", (20 + seed % 7, 16), tuple(rng.randrange(256) for _ in range(3))).save(
        buf, "JPEG"
    )
    return buf.getvalue()


def candidate(label: str, pid: str) -> Candidate:
    return factories.candidate(
        label,
        pid,
        url=f"https://live.staticflickr.com/1/{pid}_secret_m.jpg",
        height=160,
        owner=f"{pid}@N0{len(label)}",
        ownername=f"Owner of {pid}",
        title=f"Ünïcode title {pid}",
        license=int(pid) % 17,
    )


# label -> [(photo id, status)]; files exist for every ok row
PLAN = {
    "cat": [
        ("101", Status.OK),
        ("102", Status.UNAVAILABLE),
        ("103", Status.OK),
        ("104", Status.DUPLICATE),
        ("105", Status.OK),
        ("106", Status.OK),  # surplus: count is 3
        ("107", Status.PENDING),
    ],
    "dog": [("201", Status.OK), ("202", Status.OK)],
    "sports car": [("301", Status.OK), ("302", Status.TOO_SMALL)],
}


async def build_state(out: Path) -> StateStore:
    state = await StateStore.open(out / "asyncds-state.sqlite")
    seed = 0
    for label, items in PLAN.items():
        await state.add_page(
            label,
            [candidate(label, pid) for pid, _ in items],
            cursor="c",
            exhausted=label == "sports car",
            total=len(items),
        )
        (out / label).mkdir(parents=True, exist_ok=True)
        for pid, status in items:
            if status == Status.PENDING:
                continue
            if status != Status.OK:
                state.record(Outcome(label, pid, status, f"because {status}"))
                continue
            seed += 1
            factories.store_image(state, out, label, pid, jpeg(seed), seed)
    await state.flush()
    return state


def make_config(out: Path, subset: SubsetSpec | None = None) -> Config:
    return Config(
        classes=CLASSES,
        split=SplitSpec(seed=5, type="absolute", test_size=1),
        output_dir=out,
        subset=subset,
    )


STATS = RunStats(wall_time_s=4.0, api_calls=7, images_fetched=10)
DATASET = {
    "cat/101.jpg",
    "cat/103.jpg",
    "cat/105.jpg",
    "dog/201.jpg",
    "dog/202.jpg",
    "sports car/301.jpg",
}


def tree(root: Path, *, skip: Path | None = None) -> dict[str, bytes]:
    found = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and (skip is None or not p.is_relative_to(skip)):
            found[p.relative_to(root).as_posix()] = p.read_bytes()
    return found


@pytest.fixture
async def assembled(tmp_path: Path) -> tuple[Path, AssemblyReport, list[CandidateRow]]:
    out = tmp_path / "out"
    sibling = tmp_path / "elsewhere"
    sibling.mkdir()
    (sibling / "keep.txt").write_text("untouched")
    before = tree(tmp_path, skip=out)
    state = await build_state(out)
    try:
        report = await assemble_outputs(
            state, make_config(out, SubsetSpec(percentage=50, seed=1)), out, STATS
        )
        rows = await state.rows()
    finally:
        await state.close()
    assert tree(tmp_path, skip=out) == before, "nothing may be written outside the output folder"
    assert not [p for p in out.rglob("*") if p.name.startswith(TEMP_MARKER)]
    return out, report, rows


async def test_split_files(assembled):
    out, report, _ = assembled
    for name in ("train_test_split.json", "train_test_split_subset.json"):
        text = (out / name).read_text(encoding="utf-8")
        assert text == canonical(text)
    split = json.loads((out / "train_test_split.json").read_text())
    assert set(split) == {"train", "test"}
    assert set(split["train"]) | set(split["test"]) == DATASET
    assert split["train"] == sorted(split["train"]) and split["test"] == sorted(split["test"])
    assert {c.label: (c.train, c.test) for c in report.classes} == {
        "cat": (2, 1),
        "dog": (1, 1),
        "sports car": (1, 0),
    }
    subset = json.loads((out / "train_test_split_subset.json").read_text())
    assert set(subset["train"]) <= set(split["train"])
    assert set(subset["test"]) <= set(split["test"])
    assert len(subset["train"]) == 3 and len(subset["test"]) == 2  # 1 of 2, 1 of 1, 1 of 1


def canonical(text: str) -> str:
    """What ``json.dumps(indent=1)`` writes for the same value: the artifacts' format."""
    return json.dumps(json.loads(text), indent=1, ensure_ascii=False) + "\n"


async def test_urls_data_lists_the_dataset_in_search_order(assembled):
    out, _, rows = assembled
    text = (out / "urls_data.json").read_text(encoding="utf-8")
    assert text == canonical(text)  # written a url at a time, still the usual layout
    urls = json.loads(text)
    assert list(urls) == ["cat", "dog", "sports car"]
    url_of = {(r.label, r.photo_id): r.url for r in rows}
    assert urls["cat"] == [url_of["cat", pid] for pid in ("101", "103", "105")]
    assert urls["sports car"] == [url_of["sports car", "301"]]


async def test_metadata_has_one_attributed_line_per_image(assembled):
    from asyncds.flickr import LICENSES

    out, _, rows = assembled
    lines = (out / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["file_name"] for r in records] == sorted(DATASET)
    split = json.loads((out / "train_test_split.json").read_text())
    by_key = {(r.label, r.photo_id): r for r in rows}
    for record in records:
        assert list(record) == METADATA_FIELDS
        row = by_key[record["label"], record["photo_id"]]
        assert record["file_name"] == f"{row.label}/{row.photo_id}.jpg"
        assert record["split"] == ("test" if record["file_name"] in split["test"] else "train")
        assert (record["owner"], record["ownername"], record["title"]) == (
            row.owner,
            row.ownername,
            row.title,
        )
        assert record["license"] == row.license
        assert record["license_name"] == LICENSES[row.license]
        assert record["photo_page"] == f"https://www.flickr.com/photos/{row.owner}/{row.photo_id}"
        assert record["url"] == row.url
        data = (out / record["file_name"]).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        with Image.open(io.BytesIO(data)) as im:
            assert (record["width"], record["height"]) == im.size


async def test_summary_numbers_match_the_state(assembled):
    out, report, rows = assembled
    summary = json.loads((out / "summary.json").read_text())
    cat = summary["classes"]["cat"]
    assert cat["requested"] == 3
    assert cat["candidates"] == sum(r.label == "cat" for r in rows) == 7
    assert (cat["good"], cat["train"], cat["test"]) == (3, 2, 1)
    assert (cat["pending"], cat["surplus"], cat["missing_files"]) == (1, 1, 0)
    assert list(cat["dropped"]) == list(DROP_REASONS)  # every reason, zeros included
    assert {k: v for k, v in cat["dropped"].items() if v} == {"unavailable": 1, "duplicate": 1}
    car = summary["classes"]["sports car"]
    assert car["short"] and car["search_exhausted"] and car["good"] == 1
    assert car["warning"] == (
        "sports car: 1 of 4 — Flickr had no more candidates for tags [sports car, car]"
    )
    assert summary["classes"]["dog"]["warning"] is None
    totals = summary["totals"]
    assert (totals["requested"], totals["good"], totals["candidates"]) == (9, 6, 11)
    assert totals["dropped"]["too_small"] == 1 and totals["dropped_total"] == 3
    assert summary["run"] == {
        "wall_time_s": 4.0,
        "images_fetched": 10,
        "images_per_s": 2.5,
        "api_calls": 7,
    }
    assert summary["split"]["train"] == 4 and summary["split"]["test"] == 2
    assert summary["subset"]["file"] == "train_test_split_subset.json"
    assert car["warning"] in summary["warnings"]
    assert list(summary["warnings"]) == list(report.warnings)
    assert report.counts == {"cat": 3, "dog": 2, "sports car": 1}


async def test_summary_text_is_readable(assembled):
    out, _, _ = assembled
    text = (out / "summary.txt").read_text(encoding="utf-8")
    assert "sports car: 1 of 4 — Flickr had no more candidates for tags [sports car, car]" in text
    assert "cat: unavailable 1, duplicate 1" in text
    assert "too_large" not in text  # zero counts are left out of the text
    assert "2.5 images/s" in text and "7 API calls" in text
    table = text.splitlines()[2:7]
    assert table[0].split() == [
        "class", "requested", "candidates", "good", "train", "test", "dropped", "pending"
    ]  # fmt: skip
    assert table[1].split() == ["cat", "3", "7", "3", "2", "1", "2", "1"]
    assert table[3].split() == ["sports", "car", "4", "2", "1", "1", "0", "1", "0"]
    assert table[4].split()[0] == "total"
    assert len({len(line) for line in table}) == 1, "columns are aligned"


async def test_archive_holds_exactly_the_dataset(assembled, tmp_path: Path):
    out, report, _ = assembled
    archive = out / "dataset.tgz"
    assert archive in report.paths
    target = tmp_path / "extracted"
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        for m in members:
            assert not PurePosixPath(m.name).is_absolute() and ".." not in m.name.split("/")
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "")
            assert m.isfile() or m.isdir()
        tar.extractall(target, filter="data")
    expected = DATASET | ARTIFACTS | {"train_test_split_subset.json"}
    extracted = tree(target)
    assert set(extracted) == expected
    for name, data in extracted.items():
        assert data == (out / name).read_bytes(), name
    assert "cat/106.jpg" not in extracted and (out / "cat" / "106.jpg").exists()  # surplus


async def test_assembly_is_deterministic_and_drops_a_stale_subset(tmp_path: Path, assembled):
    out, _, rows = assembled
    names = ("train_test_split.json", "metadata.jsonl", "urls_data.json")
    first = {n: (out / n).read_bytes() for n in names}
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    report = write_outputs(shuffled, make_config(out), out, STATS, exhausted={"sports car": True})
    for name, data in first.items():
        assert (out / name).read_bytes() == data
    assert not (out / "train_test_split_subset.json").exists()
    assert out / "train_test_split_subset.json" not in report.paths
    with tarfile.open(out / "dataset.tgz") as tar:
        assert "train_test_split_subset.json" not in tar.getnames()


async def test_a_missing_image_is_left_out_and_a_surplus_one_takes_its_place(tmp_path: Path):
    out = tmp_path / "out"
    state = await build_state(out)
    try:
        (out / "cat" / "103.jpg").unlink()
        report = await assemble_outputs(state, make_config(out), out, STATS)
    finally:
        await state.close()
    split = json.loads((out / "train_test_split.json").read_text())
    cats = sorted(p for p in split["train"] + split["test"] if p.startswith("cat/"))
    assert cats == ["cat/101.jpg", "cat/105.jpg", "cat/106.jpg"]
    assert any("missing" in w for w in report.warnings)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"]["cat"]["missing_files"] == 1
    assert summary["classes"]["cat"]["surplus"] == 0
    metadata = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["file_name"] for r in metadata if r["label"] == "cat"] == cats
    urls = json.loads((out / "urls_data.json").read_text())
    assert [u.split("/")[-1].split("_")[0] for u in urls["cat"]] == ["101", "105", "106"]


async def test_a_class_without_images_is_an_empty_list(assembled):
    out, _, rows = assembled
    config = dataclasses.replace(
        make_config(out), classes=(*CLASSES, ClassSpec("owl", 2, ("owl",)))
    )
    report = write_outputs(rows, config, out, STATS)
    assert report.counts["owl"] == 0
    text = (out / "urls_data.json").read_text(encoding="utf-8")
    assert text == canonical(text)
    assert json.loads(text)["owl"] == []


async def measure_dedup_and_assembly(out: Path, n: int) -> tuple[int, int]:
    """Peak Python memory (bytes) of dedup and of assembly over a state of ``n`` good images."""
    (out / "cat").mkdir(parents=True)
    rng = random.Random(n)
    async with await StateStore.open(out / "asyncds-state.sqlite") as state:
        await state.add_page(
            "cat",
            [
                factories.candidate(
                    "cat",
                    str(i),
                    url=f"https://live.staticflickr.com/65535/{i}_{'f' * 10}_m.jpg",
                    title=f"{i} " + "a long title, as Flickr titles can be " * 6,
                    ownername="Somebody With A Long Name",
                )
                for i in range(1, n + 1)
            ],
            cursor="c",
            exhausted=True,
            total=n,
        )
        for i in range(1, n + 1):
            relpath = image_relpath("cat", str(i))
            (out / relpath).write_bytes(b"jpeg")
            phash = f"{rng.getrandbits(64):016x}"  # far apart: nothing is dropped
            state.record(
                Outcome("cat", str(i), Status.OK, sha256=f"{i:064x}", phash=phash, path=relpath)
            )
        await state.flush()
        config = Config(
            classes=(ClassSpec("cat", n, ("cat",)),),
            split=SplitSpec(seed=1, type="proportional", test_size=0.1),
            subset=SubsetSpec(percentage=10, seed=2),
            output_dir=out,
        )
        # A first run, unmeasured: one-off growth (caches, lazy imports, the interned-string
        # table) is not what this test is about.
        await apply_dedup(state, config, out)
        await assemble_outputs(state, config, out, STATS)
        tracemalloc.start()
        try:
            started = tracemalloc.get_traced_memory()[0]
            good = await apply_dedup(state, config, out)
            dedup_peak = tracemalloc.get_traced_memory()[1] - started
            tracemalloc.reset_peak()
            started = tracemalloc.get_traced_memory()[0]
            report = await assemble_outputs(state, config, out, STATS)
            assembly_peak = tracemalloc.get_traced_memory()[1] - started
        finally:
            tracemalloc.stop()
    assert good == report.counts == {"cat": n}
    assert len((out / "metadata.jsonl").read_text().splitlines()) == n
    return dedup_peak, assembly_peak


async def test_dedup_and_assembly_memory_does_not_grow_with_the_dataset(tmp_path: Path):
    # Rows are streamed from the state a chunk at a time; dedup's index and the dataset's
    # paths and split live in scratch SQLite files. So eight times the images must not take
    # more Python memory (SQLite's own page cache is bounded and not traced here).
    small = await measure_dedup_and_assembly(tmp_path / "small", 500)
    large = await measure_dedup_and_assembly(tmp_path / "large", 4000)
    slack = 64 * 1024  # allocator noise: a few chunks of rows, buffers
    assert large[0] < small[0] * 1.25 + slack, f"dedup: {small[0]} B -> {large[0]} B"
    assert large[1] < small[1] * 1.25 + slack, f"assembly: {small[1]} B -> {large[1]} B"


async def test_the_output_loads_with_hugging_face_datasets(assembled, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    out, _, _ = assembled
    split = json.loads((out / "train_test_split.json").read_text())
    # The split file drives the splits: a bare data_dir=out would read "train_test_split.json"
    # as the name of a train and a test split file (see docs/outputs.md).
    loaded = datasets.load_dataset(
        "imagefolder", data_dir=str(out), data_files=split, cache_dir=str(tmp_path / "hf")
    )
    assert set(loaded) == {"train", "test"}
    names = [spec.name for spec in CLASSES]
    for name in ("train", "test"):
        part = loaded[name]
        label = part.features["label"]
        assert label.names == sorted(names)
        assert len(part) == len(split[name])
        files = part.cast_column("image", datasets.Image(decode=False))
        for example in files:
            folder = Path(example["image"]["path"]).parent.name
            assert label.int2str(example["label"]) == folder
    metadata = datasets.load_dataset(
        "json", data_files=str(out / "metadata.jsonl"), cache_dir=str(tmp_path / "hf")
    )["train"]
    assert sorted(metadata["file_name"]) == sorted(DATASET)


# -- the writer interface -----------------------------------------------------------------------


class _Labels(Writer):
    """A format added as one writer: ``labels.txt`` (path, split), archived."""

    name = "labels"
    files = ("labels.txt",)
    archived = True
    per_row = True

    def start(self, ctx, cleanup):
        self.out = StreamedFile(ctx.out_dir / "labels.txt", cleanup)
        self.batches = 0

    def add(self, batch):
        self.batches += 1
        self.out.file.write("".join(f"{relpath(row)} {split}\n" for row, split in batch))

    def finish(self, ctx):
        ctx.summary_fields["labels"] = {"batches": self.batches}
        return [self.out.commit()]


class _Broken(_Labels):
    name = "broken"
    files = ("broken.txt",)

    def add(self, batch):
        raise RuntimeError("disk on fire")


async def test_a_new_writer_is_fed_the_ordered_pass_and_archived(assembled):
    out, _, rows = assembled
    writers = (*WRITERS[:-2], _Labels, *WRITERS[-2:])
    report = write_outputs(rows, make_config(out), out, STATS, writers=writers)
    split = json.loads((out / "train_test_split.json").read_text())
    expected = sorted((p, name) for name in ("train", "test") for p in split[name])
    lines = (out / "labels.txt").read_text().splitlines()
    assert [tuple(line.rsplit(" ", 1)) for line in lines] == expected
    assert json.loads((out / "summary.json").read_text())["labels"] == {"batches": 1}
    assert out / "labels.txt" in report.paths and "labels" in report.writer_s
    with tarfile.open(out / "dataset.tgz") as tar:
        assert "labels.txt" in tar.getnames()


async def test_a_writer_that_fails_leaves_no_partial_file(assembled):
    out, _, rows = assembled
    before = {n: (out / n).read_bytes() for n in ("metadata.jsonl", "dataset.tgz")}
    writers = (*WRITERS[:-2], _Broken, *WRITERS[-2:])
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_outputs(rows, make_config(out), out, STATS, writers=writers)
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_MARKER)]
    assert not (out / "broken.txt").exists()
    assert {n: (out / n).read_bytes() for n in before} == before


async def test_each_writers_phase_is_reported_as_its_finish_begins(assembled):
    out, _, rows = assembled
    heard: list[str] = []
    write_outputs(rows, make_config(out), out, STATS, on_phase=heard.append)
    assert heard == ["assembling", "archiving"]
