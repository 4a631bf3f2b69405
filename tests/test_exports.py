"""The optional exports: WebDataset and Parquet shards read back with their own libraries, the
folder still loading as before (bare ``load_dataset``) and as an ImageFolder root, reruns, and
the early failure when the libraries are missing."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from asyncds import cli
from asyncds.assembly import write_outputs
from asyncds.assembly.exports import missing_libraries
from asyncds.assembly.writers import WRITERS
from asyncds.assembly.writers.parquet import ParquetWriter
from asyncds.assembly.writers.webdataset import WebDatasetWriter
from asyncds.config import ConfigError, parse_config, parse_export
from asyncds.files import TEMP_MARKER
from tests.test_assemble import CLASSES, DATASET, STATS, build_state, make_config

NAMES = sorted(spec.name for spec in CLASSES)


def with_exports(shard_bytes: int) -> tuple:
    """The registry, with shards of ``shard_bytes`` (and row groups of 2 rows)."""
    writers = []
    for make in WRITERS:
        if make is WebDatasetWriter:
            writers.append(lambda: WebDatasetWriter(shard_bytes))
        elif make is ParquetWriter:
            writers.append(lambda: ParquetWriter(shard_bytes, row_group=2))
        else:
            writers.append(make)
    return tuple(writers)


@pytest.fixture
async def exported(tmp_path: Path):
    out = tmp_path / "out"
    state = await build_state(out)
    try:
        rows = await state.rows()
    finally:
        await state.close()
    config = dataclasses.replace(make_config(out), export=("webdataset", "parquet"))
    # Tiny shards: every split spans several of them.
    report = write_outputs(rows, config, out, STATS, writers=with_exports(1500))
    return out, config, rows, report


def split_file(out: Path) -> dict[str, list[str]]:
    return json.loads((out / "train_test_split.json").read_text())


def test_webdataset_shards_read_back_with_webdataset(exported):
    wds = pytest.importorskip("webdataset")
    out, _, _, report = exported
    split = split_file(out)
    for name, spelt in (("train", "trainset"), ("test", "testset")):
        shards = sorted(out.glob(f"webdataset-{spelt}-*.tar"))
        assert len(shards) > 1 or len(split[name]) <= 1, "small shards must roll over"
        samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False))
        assert len(samples) == len(split[name])
        files = []
        for sample in samples:
            meta = json.loads(sample["json"])
            assert sample["__key__"] == meta["photo_id"]
            assert int(sample["cls"]) == meta["cls"] == NAMES.index(meta["label"])
            assert sample["jpg"] == (out / meta["file_name"]).read_bytes()
            assert meta["split"] == name and meta["file_name"].startswith(meta["label"] + "/")
            files.append(meta["file_name"])
        assert sorted(files) == sorted(split[name])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["webdataset"]["samples"] == {n: len(split[n]) for n in ("train", "test")}
    assert all(p.parent == out for p in report.paths), "exports are files at the root"


def test_parquet_shards_load_with_datasets_image_and_classlabel(exported, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    out, _, _, _ = exported
    split = split_file(out)
    data_files = {
        name: sorted(str(p) for p in out.glob(f"parquet-{name}set-*.parquet"))
        for name in ("train", "test")
    }
    assert len(data_files["train"]) > 1, "small shards must roll over"
    loaded = datasets.load_dataset("parquet", data_files=data_files, cache_dir=str(tmp_path / "hf"))
    metadata = {
        r["file_name"]: r
        for r in map(json.loads, (out / "metadata.jsonl").read_text().split("\n")[:-1])
    }
    for name in ("train", "test"):
        part = loaded[name]
        assert part.features["label"].names == NAMES
        assert isinstance(part.features["image"], datasets.Image)
        assert len(part) == len(split[name])
        assert sorted(part["file_name"]) == sorted(split[name])
        for example in part:
            record = metadata[example["file_name"]]
            assert part.features["label"].int2str(example["label"]) == record["label"]
            for column in ("photo_id", "owner", "ownername", "title", "license", "photo_page"):
                assert example[column] == record[column]
            assert example["image"].size == (record["width"], record["height"])


def test_bare_load_dataset_does_not_take_the_shards(exported, tmp_path: Path):
    datasets = pytest.importorskip("datasets")
    out, _, _, _ = exported
    shard_names = {p.name for p in out.glob("webdataset-*")} | {
        p.name for p in out.glob("parquet-*")
    }
    assert shard_names
    # What load_dataset(OUT) resolves with no dataset card: none of the shards in any split,
    # and not their formats as the default config.
    builder = datasets.load_dataset_builder(str(out), cache_dir=str(tmp_path / "hf"))
    resolved = {Path(f).name for files in builder.config.data_files.values() for f in files}
    assert resolved and not resolved & shard_names
    assert builder.name not in ("webdataset", "parquet")
    # And loaded: nothing of a shard's columns (without the dataset card this is the split
    # file read as JSON, the known gap the card closes; with it, the class-folder dataset).
    datasets.disable_progress_bars()
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf1"))
    shard_columns = {"jpg", "cls", "__key__", "photo_id", "sha256"}
    for part in loaded.values():
        assert not set(part.column_names) & shard_columns, part.column_names
    # Without the split file (whose name is what auto-discovery picks today), the images win.
    for name in ("train_test_split.json", "train_test_split_subset.json"):
        (out / name).unlink(missing_ok=True)
    builder = datasets.load_dataset_builder(str(out), cache_dir=str(tmp_path / "hf2"))
    assert builder.name == "imagefolder"


def test_the_folder_stays_an_imagefolder_root(exported):
    out, _, _, _ = exported
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert folders == NAMES, "an export must add no folder (ImageFolder would see a class)"
    images = {p.relative_to(out).as_posix() for p in out.rglob("*.jpg")}
    assert images >= DATASET
    try:
        from torchvision.datasets import ImageFolder
    except ImportError:
        return
    assert ImageFolder(str(out)).classes == NAMES


def test_an_export_dropped_from_the_config_is_removed_on_the_next_assembly(exported):
    out, config, rows, _ = exported
    write_outputs(rows, dataclasses.replace(config, export=("parquet",)), out, STATS)
    assert not list(out.glob("webdataset-*"))
    # Default shard sizes: one shard per split, and the small shards of before are gone.
    assert sorted(p.name for p in out.glob("parquet-*")) == [
        "parquet-testset-000000.parquet",
        "parquet-trainset-000000.parquet",
    ]
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_MARKER)]


def test_a_failed_export_leaves_the_previous_shards(exported):
    out, config, rows, _ = exported
    before = {p.name: p.read_bytes() for p in out.glob("webdataset-*")}

    class Broken(ParquetWriter):
        def add(self, batch):
            raise RuntimeError("disk on fire")

    writers = tuple(Broken if w is ParquetWriter else w for w in WRITERS)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_outputs(rows, config, out, STATS, writers=writers)
    assert {p.name: p.read_bytes() for p in out.glob("webdataset-*")} == before
    assert not [p for p in out.iterdir() if p.name.startswith(TEMP_MARKER)]


# -- config and command line ------------------------------------------------------------------


def test_export_in_the_config_is_a_list_of_known_names():
    base = {"classes": [{"name": "cat", "count": 10}], "train_test_split": {"test_size": 2}}
    assert parse_config(base).export == ()
    assert parse_config({**base, "export": ["Parquet", "webdataset", "parquet"]}).export == (
        "parquet",
        "webdataset",
    )
    with pytest.raises(ConfigError) as err:
        parse_config({**base, "export": ["parquet", "tfrecord"]}, source="c.yaml")
    message = str(err.value)
    assert message.startswith("c.yaml: export[1]: must be one of webdataset, parquet, urls")
    assert "\n" not in message
    with pytest.raises(ConfigError, match="export: must be a list of export formats"):
        parse_config({**base, "export": 3})
    assert parse_export("webdataset,parquet") == ("webdataset", "parquet")
    with pytest.raises(ConfigError, match="--export: value: must be one of"):
        parse_export("webdataset,")


def write_config(tmp_path: Path, **extra: object) -> Path:
    import yaml

    path = tmp_path / "c.yaml"
    data = {"classes": [{"name": "cat", "count": 4}], "train_test_split": {"test_size": 1}}
    path.write_text(yaml.safe_dump({**data, **extra, "output_dir": str(tmp_path / "out")}))
    return path


def test_a_missing_library_fails_before_anything_is_downloaded(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    assert missing_libraries(["webdataset"]) is None  # tar files need no library
    path = write_config(tmp_path, export=["webdataset"])
    code = cli.main([str(path), "--emulator", "--export", "parquet", "-q"])
    err = capsys.readouterr().err.strip()
    assert code == cli.EXIT_USAGE
    assert (
        err == "error: parquet needs pyarrow, which is not installed: pip install 'asyncds[export]'"
    )
    assert not (tmp_path / "out").exists(), "nothing may be started"


def test_a_bad_export_on_the_command_line_is_a_usage_error(tmp_path, capsys):
    code = cli.main([str(write_config(tmp_path)), "--emulator", "--export", "zip"])
    assert code == cli.EXIT_USAGE
    assert "--export: value: must be one of webdataset, parquet, urls" in capsys.readouterr().err


# -- reruns -----------------------------------------------------------------------------------


async def test_shards_are_rebuilt_only_when_the_dataset_changed(tmp_path: Path):
    from asyncds import job
    from asyncds.emulator import EMULATOR_API_KEY, EmulatorSettings, running_emulator
    from tests.test_job import cat_config

    out = tmp_path / "out"

    def inodes() -> dict[str, int]:
        return {p.name: p.stat().st_ino for p in out.glob("*") if p.is_file()}

    async with running_emulator(EmulatorSettings(seed=3, tag_sizes={"cat": 80})) as emu:
        plain = cat_config(emu.api_url, out, 20)

        async def run(config) -> None:
            await job.create_dataset(config, api_key=EMULATOR_API_KEY, out_dir=out, quiet=True)

        await run(plain)
        assert not list(out.glob("webdataset-*"))
        # A new export on a finished folder: written, without downloading anything.
        images = emu.stats.total_image_requests
        wds = dataclasses.replace(plain, export=("webdataset",))
        await run(wds)
        assert sorted(p.name for p in out.glob("webdataset-*")) == [
            "webdataset-testset-000000.tar",
            "webdataset-trainset-000000.tar",
        ]
        assert emu.stats.total_image_requests == images
        # Unchanged: nothing is rewritten, shards included.
        before = inodes()
        await run(wds)
        assert inodes() == before
        # Another export asked for: that one is added.
        both = dataclasses.replace(plain, export=("webdataset", "parquet"))
        await run(both)
        assert len(list(out.glob("parquet-*"))) == 2
        # The dataset changed (more images): the shards are rebuilt with them.
        await run(
            dataclasses.replace(both, classes=(dataclasses.replace(plain.classes[0], count=30),))
        )
        summary = json.loads((out / "summary.json").read_text())
        assert sum(summary["webdataset"]["samples"].values()) == 30
        assert sum(summary["parquet"]["samples"].values()) == 30
        assert (out / "webdataset-trainset-000000.tar").stat().st_ino != before[
            "webdataset-trainset-000000.tar"
        ]


async def test_exports_stream_the_images_memory_stays_flat(tmp_path: Path):
    """4 MB of images through both exports: Python's peak grows by far less than that (one
    image, one row group at a time)."""
    import os
    import tracemalloc

    from asyncds.assembly import assemble_outputs
    from asyncds.config import ClassSpec, Config, SplitSpec
    from asyncds.files import image_relpath
    from asyncds.state import Outcome, StateStore, Status
    from tests import factories

    n, size = 500, 8192
    out = tmp_path / "out"
    (out / "cat").mkdir(parents=True)
    async with await StateStore.open(out / "asyncds-state.sqlite") as state:
        await state.add_page(
            "cat",
            [factories.candidate("cat", str(i)) for i in range(n)],
            cursor="c",
            exhausted=True,
            total=n,
        )
        for i in range(n):
            relpath = image_relpath("cat", str(i))
            (out / relpath).write_bytes(os.urandom(size))  # the writers never decode
            state.record(Outcome("cat", str(i), Status.OK, sha256=f"{i:064x}", path=relpath))
        await state.flush()
        plain = Config(
            classes=(ClassSpec("cat", n, ("cat",)),),
            split=SplitSpec(seed=1, type="proportional", test_size=0.1),
            output_dir=out,
        )
        exporting = dataclasses.replace(plain, export=("webdataset", "parquet"))

        async def peak(config: Config) -> int:
            tracemalloc.start()
            try:
                started = tracemalloc.get_traced_memory()[0]
                await assemble_outputs(state, config, out, STATS)
                return tracemalloc.get_traced_memory()[1] - started
            finally:
                tracemalloc.stop()

        await assemble_outputs(state, exporting, out, STATS)  # imports, caches: unmeasured
        without, exporting_peak = await peak(plain), await peak(exporting)
    assert exporting_peak - without < n * size / 4, f"{without} B -> {exporting_peak} B"
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["parquet"]["samples"].values()) == n


def test_fresh_deletes_the_shards_too(tmp_path: Path):
    from asyncds.job import fresh_targets

    out = tmp_path / "out"
    out.mkdir()
    names = ["webdataset-trainset-000000.tar", "parquet-testset-000001.parquet", "summary.txt"]
    for name in names:
        (out / name).write_bytes(b"x")
    (out / "notes.tar").write_bytes(b"mine")  # not ours: kept
    targets = {p.name for p in fresh_targets(make_config(out), out)}
    assert targets == set(names)


@pytest.mark.slow
async def test_the_command_line_export_overrides_the_config(tmp_path: Path):
    from tests import e2e

    out = tmp_path / "out"
    config = e2e.write_config(tmp_path / "c.yaml", {"cat": 12, "dog": 8}, export=["parquet"])
    result = await e2e.run_cli(
        str(config), "--emulator", "--output-dir", str(out), "--export", "webdataset", "-q"
    )
    assert result.code == 0, result.stderr
    assert not list(out.glob("parquet-*")), "--export replaces the config's list"
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["webdataset"]["samples"].values()) == 20
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["cat", "dog"]
