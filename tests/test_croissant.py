"""croissant.json validates with mlcroissant and reads back offline: one record per image,
matching metadata.jsonl, and the FileSet's files are exactly the dataset's images."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from asyncds.cli import EXIT_OK, main
from tests.e2e import write_config

mlc = pytest.importorskip("mlcroissant")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("croissant")
    out = tmp / "out"
    config = write_config(tmp / "c.yaml", {"cat": 9, "dog": 6, "sea lion": 4})
    assert main([str(config), "--emulator", "--output-dir", str(out), "-q"]) == EXIT_OK
    return out


def text(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


def check_croissant(root: Path) -> None:
    # Validation runs on load: an error raises (recommended-only properties just warn).
    dataset = mlc.Dataset(str(root / "croissant.json"))
    conforms = json.loads((root / "croissant.json").read_text())["conformsTo"]
    assert conforms.startswith("http://mlcommons.org/croissant/1.")
    metadata = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    records = [
        {key.split("/", 1)[1]: text(value) for key, value in record.items()}
        for record in dataset.records("images")
    ]
    assert len(records) == len(metadata)  # one record per image
    expected = [
        {
            "file_name": m["file_name"],
            "label": m["label"],
            "split": m["split"],
            "photo_id": m["photo_id"],
            "license": m["license"],
            "license_name": m["license_name"],
            "creator": m["ownername"],
            "creator_id": m["owner"],
            "photo_page": m["photo_page"],
        }
        for m in metadata
    ]
    key = lambda r: r["file_name"]  # noqa: E731
    assert sorted(records, key=key) == sorted(expected, key=key)
    files = sorted(
        Path(text(r["image_files/file_name"])).relative_to(root).as_posix()
        for r in dataset.records("image_files")
    )
    assert files == sorted(m["file_name"] for m in metadata)


def test_croissant_validates_and_reads_back_one_record_per_image(built: Path):
    check_croissant(built)


def test_croissant_in_the_archive_reads_back_offline(built: Path, tmp_path: Path):
    with tarfile.open(built / "dataset.tgz") as tar:
        tar.extractall(tmp_path, filter="data")
    check_croissant(tmp_path)
