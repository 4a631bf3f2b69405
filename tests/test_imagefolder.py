"""The output folder is an ImageFolder root: its only folders are the classes that hold images,
each holding exactly the dataset's images of that class (the split file's paths). No surplus
image, no empty class folder; a lowered and raised ``count`` still gives the first ``count``
good images in search order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from asyncds.cli import EXIT_OK, main
from asyncds.emulator import EMULATOR_API_KEY, EmulatorSettings
from asyncds.emulator.server import EmulatorThread
from asyncds.state import STATE_FILE
from tests.e2e import write_config

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"}


def image_folder_classes(root: Path) -> list[str]:
    """torchvision's rule (``find_classes``): every folder at the root, hidden ones too, sorted;
    it raises when one holds no image file, so an empty class folder breaks the root."""
    classes = sorted(e.name for e in root.iterdir() if e.is_dir())
    for name in classes:
        files = [p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES]
        assert files, f"{name}: a class folder with no image fails ImageFolder"
    return classes


def check_rule(out: Path) -> dict[str, list[str]]:
    split = json.loads((out / "train_test_split.json").read_text())
    dataset = sorted(split["train"] + split["test"])
    classes = sorted({p.split("/")[0] for p in dataset})
    assert image_folder_classes(out) == classes
    on_disk = sorted(
        p.relative_to(out).as_posix() for c in classes for p in (out / c).rglob("*") if p.is_file()
    )
    assert on_disk == dataset  # exactly the dataset's images: no surplus, no dropped file
    return split


def urls(out: Path) -> dict[str, list[str]]:
    return json.loads((out / "urls_data.json").read_text())


@pytest.fixture
def emulator(monkeypatch: pytest.MonkeyPatch):
    # "yeti" has no photo on the emulator: its class ends with 0 images.
    with EmulatorThread(EmulatorSettings(seed=3, tag_sizes={"yeti": 0})) as emu:
        monkeypatch.setenv("FLICKR_API_URL", emu.api_url)
        monkeypatch.setenv("API_KEY", EMULATOR_API_KEY)
        yield emu


def run(tmp_path: Path, out: Path, classes: dict[str, int]) -> None:
    config = write_config(tmp_path / "c.yaml", classes)
    assert main([str(config), "--output-dir", str(out), "-q"]) == EXIT_OK


def test_only_classes_with_images_and_exactly_their_images(emulator, tmp_path: Path):
    out = tmp_path / "out"
    run(tmp_path, out, {"cat": 12, "dog": 6, "yeti": 3})
    check_rule(out)
    assert not (out / "yeti").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["classes"]["yeti"]["good"] == 0


def test_a_lowered_count_leaves_no_surplus_and_raising_it_restores_the_same_images(
    emulator, tmp_path: Path
):
    out = tmp_path / "out"
    run(tmp_path, out, {"cat": 12, "dog": 6})
    first = urls(out)
    check_rule(out)

    run(tmp_path, out, {"cat": 8, "dog": 6})
    check_rule(out)
    assert urls(out) == {"cat": first["cat"][:8], "dog": first["dog"]}  # first 8 by rank
    summary = json.loads((out / "summary.json").read_text())["classes"]["cat"]
    assert (summary["good"], summary["surplus"], summary["missing_files"]) == (8, 0, 0)
    assert summary["pending"] >= 4  # the released surplus: known, not in the folder

    served = emulator.stats.images_served
    run(tmp_path, out, {"cat": 8, "dog": 6})  # a rerun does not fetch the released ones again
    assert emulator.stats.images_served == served
    check_rule(out)

    run(tmp_path, out, {"cat": 12, "dog": 6})
    check_rule(out)
    assert urls(out) == first  # the first 12 good in search order, as the first run had
    assert (out / STATE_FILE).is_file()


def test_the_extracted_archive_is_an_image_folder_root(emulator, tmp_path: Path):
    import tarfile

    out = tmp_path / "out"
    run(tmp_path, out, {"cat": 5, "dog": 4, "yeti": 2})
    extracted = tmp_path / "x"
    with tarfile.open(out / "dataset.tgz") as tar:
        tar.extractall(extracted, filter="data")
    check_rule(extracted)
    assert yaml.safe_load((extracted / "README.md").read_text().split("---\n", 2)[1])
