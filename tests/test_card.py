"""README.md, the dataset card: a bare ``datasets.load_dataset(OUT)`` gives the split file's
train and test with a ClassLabel, on the folder and on the extracted dataset.tgz."""

from __future__ import annotations

import glob
import io
import json
import tarfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from asyncds.assembly import RunStats, write_outputs
from asyncds.assembly.writers.card import hf_license
from asyncds.cli import EXIT_OK, main
from asyncds.config import ClassSpec, Config, ConfigError, SplitSpec, load_config
from asyncds.files import image_relpath
from asyncds.state import CandidateRow, Status
from tests.e2e import write_config

datasets = pytest.importorskip("datasets")
datasets.disable_progress_bars()

STATS = RunStats(wall_time_s=1.0, api_calls=1, images_fetched=1)


def front_matter(out: Path) -> dict:
    text = (out / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def check_loaded(root: Path, cache: Path) -> None:
    """Bare load_dataset(root): the split file's splits and sizes, sorted ClassLabel names,
    each label its file's folder."""
    split = json.loads((root / "train_test_split.json").read_text())
    loaded = datasets.load_dataset(str(root), cache_dir=str(cache))
    assert set(loaded) == {name for name, paths in split.items() if paths}
    classes = sorted({p.split("/")[0] for paths in split.values() for p in paths})
    for name, part in loaded.items():
        label = part.features["label"]
        assert isinstance(label, datasets.ClassLabel) and label.names == classes
        files = part.cast_column("image", datasets.Image(decode=False))
        got = sorted(
            (Path(ex["image"]["path"]).relative_to(root).as_posix(), label.int2str(ex["label"]))
            for ex in files
        )
        assert got == [(p, p.split("/")[0]) for p in split[name]]


# -- end to end, the emulator's folder ---------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("card")
    out = tmp / "out"
    config = write_config(tmp / "c.yaml", {"cat": 14, "dog": 9, "bird": 6})
    assert main([str(config), "--emulator", "--output-dir", str(out), "-q"]) == EXIT_OK
    return out


def test_bare_load_dataset_gives_the_split_on_the_folder_and_the_archive(
    built: Path, tmp_path: Path
):
    check_loaded(built, tmp_path / "hf")
    extracted = tmp_path / "x"
    with tarfile.open(built / "dataset.tgz") as tar:
        assert "README.md" in tar.getnames()
        tar.extractall(extracted, filter="data")
    assert (extracted / "README.md").read_bytes() == (built / "README.md").read_bytes()
    check_loaded(extracted, tmp_path / "hf")


def test_the_documented_data_files_recipe_still_works(built: Path, tmp_path: Path):
    split = json.loads((built / "train_test_split.json").read_text())
    loaded = datasets.load_dataset(
        "imagefolder", data_dir=str(built), data_files=split, cache_dir=str(tmp_path / "hf")
    )
    assert {name: len(part) for name, part in loaded.items()} == {
        name: len(paths) for name, paths in split.items()
    }
    assert loaded["train"].features["label"].names == ["bird", "cat", "dog"]


def test_the_card_names_the_licenses_classes_and_how_to_credit(built: Path):
    meta = front_matter(built)
    records = [json.loads(line) for line in (built / "metadata.jsonl").read_text().splitlines()]
    assert meta["license"] == sorted({hf_license(r["license"]) for r in records})
    assert meta["task_categories"] == ["image-classification"]
    names = meta["dataset_info"]["features"][1]["dtype"]["class_label"]["names"]
    assert names == {"0": "bird", "1": "cat", "2": "dog"}
    split = json.loads((built / "train_test_split.json").read_text())
    (config,) = meta["configs"]
    assert config["data_files"] == [
        {"split": name, "path": split[name]} for name in ("train", "test")
    ]
    body = (built / "README.md").read_text(encoding="utf-8").split("---\n", 2)[2]
    for text in ("metadata.jsonl", "ownername", "photo_page", "`cat`", "relevance"):
        assert text in body
    assert f"{len(split['train'])} in train and {len(split['test'])} in test" in body


# -- the card's edge cases, from rows --------------------------------------------------------


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 10, 10)).save(buf, "JPEG")
    return buf.getvalue()


def rows_with_files(out: Path, plan: dict[str, list[int]]) -> list[CandidateRow]:
    """Good rows (and their files) for ``plan``: label -> the Flickr license of each image."""
    rows = []
    for label, licenses in plan.items():
        (out / label).mkdir(parents=True, exist_ok=True)
        for seq, license_id in enumerate(licenses):
            pid = f"{seq + 1}{len(label)}"
            path = image_relpath(label, pid)
            (out / path).write_bytes(jpeg())
            rows.append(
                CandidateRow(
                    label=label,
                    photo_id=pid,
                    seq=seq,
                    url=f"http://127.0.0.1/{pid}.jpg",
                    width=8,
                    height=6,
                    owner="1@N01",
                    ownername="Jane",
                    title="t",
                    license=license_id,
                    date_upload=1_600_000_000,
                    status=Status.OK,
                    sha256=f"{seq:064x}",
                    path=path,
                    stored_width=8,
                    stored_height=6,
                )
            )
    return rows


def test_awkward_class_names_an_empty_class_and_license_ids(tmp_path: Path):
    out = tmp_path / "out"
    # '[' is glob syntax to datasets, '#' and a leading '-' are YAML syntax.
    plan = {"sea [lion] #1": [0, 4, 7], "-dash": [9, 11, 15], "zebra": []}
    rows = rows_with_files(out, plan)
    config = Config(
        classes=tuple(ClassSpec(name, 3, (name.strip("-") or "x",)) for name in plan),
        split=SplitSpec(seed=1, type="absolute", test_size=1),
        output_dir=out,
    )
    write_outputs(rows, config, out, STATS)
    meta = front_matter(out)
    assert meta["license"] == ["cc-by-2.0", "cc-by-4.0", "cc-by-nc-sa-4.0", "cc0-1.0", "other"]
    names = meta["dataset_info"]["features"][1]["dtype"]["class_label"]["names"]
    assert names == {"0": "-dash", "1": "sea [lion] #1"}  # zebra has no image: no label
    paths = meta["configs"][0]["data_files"][0]["path"]
    assert paths and all(glob.glob(glob.escape(str(out)) + "/" + p) for p in paths)
    check_loaded(out, tmp_path / "hf")


def test_an_empty_test_split_is_left_out(tmp_path: Path):
    out = tmp_path / "out"
    rows = rows_with_files(out, {"cat": [4], "dog": [4]})
    config = Config(
        classes=(ClassSpec("cat", 1, ("cat",)), ClassSpec("dog", 1, ("dog",))),
        split=SplitSpec(seed=1, type="proportional", test_size=0.1),  # one image: none in test
        output_dir=out,
    )
    write_outputs(rows, config, out, STATS)
    assert json.loads((out / "train_test_split.json").read_text())["test"] == []
    assert [f["split"] for f in front_matter(out)["configs"][0]["data_files"]] == ["train"]
    check_loaded(out, tmp_path / "hf")


def test_a_class_named_like_the_card_is_refused(tmp_path: Path):
    config = write_config(tmp_path / "c.yaml", {"readme.md": 3})
    with pytest.raises(ConfigError, match="output file"):
        load_config(config)
