from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
import yaml

from asyncds.config import (
    DEFAULT_API_URL,
    LICENSE_PRESETS,
    ClassSpec,
    Config,
    ConfigError,
    DedupSettings,
    DownloadSettings,
    FlickrSettings,
    ImageSettings,
    SplitSpec,
    SubsetSpec,
    load_config,
    parse_config,
)
from asyncds.retry import RetryPolicy

REPO_ROOT = Path(__file__).resolve().parents[1]

SEED_CONFIG = """\
classes:
  - name: cat
    count: 20000
  - name: dog
    count: 10000
  - name: frog
    count: 10000
  - name: bird
    count: 10000
  - name: flower
    count: 5000
  - name: tree
    count: 5000
  - name: mushroom
    count: 5000
  - name: sportscar
    count: 10000
  - name: boat
    count: 10000
  - name: jumbojet
    count: 5000

train_test_split:
  seed: 42

  # proportional - select n% of images from each class
  # absolute - select n images from each class
  type: 'absolute'
  test_size: 500
"""

SEED_COUNTS = {
    "cat": 20000,
    "dog": 10000,
    "frog": 10000,
    "bird": 10000,
    "flower": 5000,
    "tree": 5000,
    "mushroom": 5000,
    "sportscar": 10000,
    "boat": 10000,
    "jumbojet": 5000,
}

BASE = "classes: [{name: cat, count: 1000}, {name: dog, count: 1000}]\n"


def parse(text: str, environ: dict[str, str] | None = None) -> Config:
    return parse_config(yaml.safe_load(text), source="config.yaml", environ=environ or {})


def error_of(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, environ)
    return str(info.value)


def write(tmp_path: Path, text: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Accepted configurations


def test_seed_config_loads_unchanged(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SEED_CONFIG), environ={})

    assert {c.name: c.count for c in config.classes} == SEED_COUNTS
    assert [c.name for c in config.classes] == list(SEED_COUNTS)  # order kept
    assert all(c.tags == (c.name,) and c.tag_mode == "any" for c in config.classes)
    assert config.split == SplitSpec(seed=42, type="absolute", test_size=500)
    assert config.split.test_count(20000) == 500


def test_repository_config_yaml_loads() -> None:
    config = load_config(REPO_ROOT / "config.yaml", environ={})

    assert len(config.classes) >= 1
    assert config.split.type in ("absolute", "proportional")


def test_defaults() -> None:
    config = parse("classes: [{name: cat, count: 1000}]")

    assert config.output_dir == Path("outputs")
    assert not config.output_dir.is_absolute()
    assert config.classes == (ClassSpec(name="cat", count=1000, tags=("cat",), tag_mode="any"),)
    assert config.split == SplitSpec(seed=42, type="absolute", test_size=500)
    assert config.subset is None
    assert config.flickr == FlickrSettings(
        api_url=DEFAULT_API_URL,
        per_page=500,
        calls_per_hour=3600,
        license=(),
        sort="relevance",
        safe_search=1,
        media="photos",
        retries=5,
        backoff_s=1.0,
    )
    assert config.image == ImageSettings(
        max_side=240, quality=90, min_side=64, max_pixels=50_000_000
    )
    assert config.download == DownloadSettings(
        concurrency=128, timeout_s=30.0, max_bytes=20_000_000, queue_size=256, idle_timeout_s=10.0
    )
    assert config.dedup == DedupSettings(cross_class="drop", phash_distance=4)
    assert config.flickr.retry_policy == RetryPolicy(retries=5, backoff_s=1.0)


def test_every_optional_key() -> None:
    config = parse(
        textwrap.dedent(
            """\
            output_dir: data/run1
            classes:
              - name: cat
                count: 2000
                tags: [cat, kitten, -dog]
                tag_mode: any
              - name: sports car
                count: 1000
                tags: "sportscar, car ,-toy"
                tag_mode: ALL
            train_test_split: {seed: 7, type: proportional, test_size: 20}
            subset: {percentage: 10, seed: 3}
            flickr:
              api_url: http://127.0.0.1:8080/services/rest/
              per_page: 250
              calls_per_hour: 1000
              license: [4, 5, 9, 10, 4]
              sort: interestingness-desc
              safe_search: 2
              media: ALL
              retries: 0
              backoff_s: 0.5
            image: {max_side: 512, quality: 80, min_side: 100, max_pixels: 1000000}
            download:
              concurrency: 8
              timeout_s: 12.5
              idle_timeout_s: 2.5
              max_bytes: 1000000
              queue_size: 16
              outage_s: 45
            dedup: {cross_class: keep-first, phash_distance: 0}
            """
        )
    )

    assert config.output_dir == Path("data/run1")
    assert config.classes[0].tags == ("cat", "kitten", "-dog")
    assert config.classes[0].flickr_tags == "cat,kitten,-dog"
    assert config.classes[1] == ClassSpec("sports car", 1000, ("sportscar", "car", "-toy"), "all")
    assert config.split == SplitSpec(seed=7, type="proportional", test_size=20)
    assert config.split.fraction == pytest.approx(0.2)
    assert config.subset == SubsetSpec(percentage=10, seed=3)
    assert config.subset.fraction == pytest.approx(0.1)
    assert config.flickr.license == (4, 5, 9, 10)  # repeats dropped
    assert config.flickr.sort == "interestingness-desc"
    assert config.flickr.media == "all"  # matched ignoring case, like every enum
    assert (config.flickr.per_page, config.flickr.safe_search, config.flickr.retries) == (250, 2, 0)
    assert config.flickr.api_url == "http://127.0.0.1:8080/services/rest/"
    assert config.flickr.retry_policy == RetryPolicy(retries=0, backoff_s=0.5)
    assert config.image == ImageSettings(512, 80, 100, 1_000_000)
    assert config.download == DownloadSettings(
        8, 12.5, 1_000_000, 16, outage_s=45, idle_timeout_s=2.5
    )
    assert config.dedup == DedupSettings("keep-first", 0)


def test_config_is_frozen() -> None:
    config = parse(BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.output_dir = Path("x")  # type: ignore[misc]


def test_empty_sections_mean_defaults() -> None:
    config = parse(BASE + "flickr:\nimage:\ndownload:\ndedup:\nsubset:\ntrain_test_split:\n")
    assert config.flickr == FlickrSettings()
    assert config.subset is None
    assert config.split == SplitSpec()


def test_small_max_side_lowers_the_default_min_side() -> None:
    assert parse(BASE + "image: {max_side: 32}").image.min_side == 32


def test_duplicate_tags_are_dropped_case_insensitively() -> None:
    config = parse("classes: [{name: cat, count: 1000, tags: [cat, Cat, kitten]}]")
    assert config.classes[0].tags == ("cat", "kitten")


def test_absolute_test_size_zero_means_no_test_set() -> None:
    config = parse(BASE + "train_test_split: {test_size: 0}")
    assert config.split.test_count(1000) == 0


def test_license_may_be_a_single_id() -> None:
    assert parse(BASE + "flickr: {license: 4}").flickr.license == (4,)


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        ("any", ()),
        ("open", (4, 5, 7, 8, 9, 10, 11, 12)),
        ("cc-by", (4, 11)),
        ("public-domain", (7, 8, 9, 10)),
        ("' Open '", (4, 5, 7, 8, 9, 10, 11, 12)),  # case and spaces, like the other choices
    ],
)
def test_license_presets_are_their_id_lists(value: str, ids: tuple[int, ...]) -> None:
    assert parse(BASE + f"flickr: {{license: {value}}}").flickr.license == ids


def test_license_presets_name_only_known_ids() -> None:
    from asyncds.flickr import LICENSES

    assert LICENSE_PRESETS["any"] == () == FlickrSettings().license  # the default: no filter
    for name, ids in LICENSE_PRESETS.items():
        assert set(ids) <= set(LICENSES), name
        assert 0 not in ids, f"{name} must leave out All Rights Reserved"


def test_output_dir_relative_stays_relative_and_tilde_expands() -> None:
    assert parse(BASE + "output_dir: ./out").output_dir == Path("out")
    assert parse(BASE + "output_dir: ~/ds").output_dir == Path.home() / "ds"


def test_unicode_class_name_is_allowed() -> None:
    assert parse("classes: [{name: café, count: 5}]\ntrain_test_split: {test_size: 1}").classes[
        0
    ].name == ("café")


# ---------------------------------------------------------------------------------------------
# FLICKR_API_URL


def test_flickr_api_url_env_overrides_config() -> None:
    env = {"FLICKR_API_URL": "http://127.0.0.1:9999/services/rest/"}
    config = parse(BASE + "flickr: {api_url: 'https://example.org/rest/'}", env)
    assert config.flickr.api_url == "http://127.0.0.1:9999/services/rest/"


def test_flickr_api_url_env_applies_in_load_config(tmp_path: Path) -> None:
    env = {"FLICKR_API_URL": "http://localhost:1234/rest/"}
    assert load_config(write(tmp_path, BASE), environ=env).flickr.api_url == (
        "http://localhost:1234/rest/"
    )


def test_flickr_api_url_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLICKR_API_URL", "http://localhost:4321/rest/")
    config = parse_config(yaml.safe_load(BASE))
    assert config.flickr.api_url == "http://localhost:4321/rest/"
    monkeypatch.delenv("FLICKR_API_URL")
    assert parse_config(yaml.safe_load(BASE)).flickr.api_url == DEFAULT_API_URL


def test_empty_flickr_api_url_env_is_ignored() -> None:
    assert parse(BASE, {"FLICKR_API_URL": "  "}).flickr.api_url == DEFAULT_API_URL


def test_bad_flickr_api_url_env_is_an_error() -> None:
    message = error_of(BASE, {"FLICKR_API_URL": "localhost:8080"})
    assert message.startswith("config.yaml: FLICKR_API_URL (environment): ")
    assert "\n" not in message


# ---------------------------------------------------------------------------------------------
# test_count


@pytest.mark.parametrize(
    ("test_size", "n", "expected"),
    [
        (500, 20000, 500),
        (500, 501, 500),
        (500, 500, 250),  # short: test_size would leave no training image, so half
        (500, 300, 150),
        (500, 7, 3),
        (500, 1, 0),
        (500, 0, 0),
        (0, 100, 0),
        (1, 2, 1),
        (1, 1, 0),
    ],
)
def test_absolute_test_count(test_size: int, n: int, expected: int) -> None:
    assert SplitSpec(type="absolute", test_size=test_size).test_count(n) == expected


@pytest.mark.parametrize(
    ("test_size", "n", "expected"),
    [
        (0.2, 1000, 200),
        (20, 1000, 200),  # 1 <= x < 100 is a percent
        (1, 1000, 10),  # 1 means 1 percent, not everything
        (0.5, 5, 3),  # 2.5 rounds half up
        (10, 25, 3),  # exactly 2.5: decimal arithmetic, half up
        (10, 24, 2),
        (0.001, 100, 1),  # at least one when n >= 2
        (0.001, 2, 1),
        (0.999, 10, 9),  # never all of them
        (99.9, 1000, 999),
        (50, 1, 0),  # a single image stays in train
        (50, 0, 0),
        (0.5, 2, 1),
    ],
)
def test_proportional_test_count(test_size: float, n: int, expected: int) -> None:
    assert SplitSpec(type="proportional", test_size=test_size).test_count(n) == expected


def test_proportional_test_count_is_within_bounds_for_many_sizes() -> None:
    for test_size in (0.01, 0.1, 0.33, 0.5, 0.9, 1, 5, 33.3, 50, 75, 99):
        split = SplitSpec(type="proportional", test_size=test_size)
        for n in range(0, 300):
            count = split.test_count(n)
            assert 0 <= count <= max(n - 1, 0)
            if n >= 2:
                assert count >= 1


def test_fraction_and_describe() -> None:
    assert SplitSpec(type="proportional", test_size=0.25).fraction == 0.25
    assert SplitSpec(type="proportional", test_size=25).fraction == 0.25
    assert "25% of each class" in SplitSpec(type="proportional", test_size=25).describe()
    assert "500 images of each class" in SplitSpec().describe()
    with pytest.raises(ValueError):
        _ = SplitSpec(type="absolute", test_size=500).fraction


# ---------------------------------------------------------------------------------------------
# Errors: every one is a single line "config.yaml: <key.path>: <problem>; <valid>"


def klass(body: str) -> str:
    """A config with one class whose mapping holds ``body``."""
    return f"classes: [{{{body}}}]\n"


def extra(text: str) -> str:
    """The two-class base config plus ``text``."""
    return BASE + text + "\n"


ERROR_CASES = [
    # (yaml text, key path, a fragment of the message)
    pytest.param("- cat\n- dog\n", "(top level)", "must be a mapping", id="top-level-list"),
    pytest.param("cat", "(top level)", "must be a mapping", id="top-level-scalar"),
    pytest.param("", "(top level)", "empty", id="empty-document"),
    pytest.param("output_dir: out\n", "classes", "missing", id="missing-classes"),
    pytest.param("classes:\n", "classes", "is empty", id="classes-null"),
    pytest.param("classes: []\n", "classes", "is empty", id="classes-empty-list"),
    pytest.param("classes: {cat: 100}\n", "classes", "must be a list", id="classes-mapping"),
    pytest.param(
        "classes: [cat]\n", "classes[0]", "must be a mapping with name and count", id="class-string"
    ),
    pytest.param(
        extra("colour: red"), "colour", "valid keys here are classes, dedup", id="unknown-top-key"
    ),
    pytest.param(
        "clases: [{name: cat, count: 1}]\n",
        "clases",
        "did you mean 'classes'?",
        id="misspelled-top-key",
    ),
    pytest.param(extra("1: x"), "1", "unknown key", id="non-string-key"),
    pytest.param(
        klass("name: cat, count: 5, cnt: 1"), "classes[0].cnt", "unknown", id="unknown-class-key"
    ),
    pytest.param(
        klass("name: cat, count: 5, tag: [x]"),
        "classes[0].tag",
        "did you mean 'tags'?",
        id="misspelled-class-key",
    ),
    pytest.param(
        extra("train_test_split: {sed: 1}"),
        "train_test_split.sed",
        "did you mean 'seed'?",
        id="unknown-split-key",
    ),
    pytest.param(
        extra("subset: {percent: 1}"),
        "subset.percent",
        "did you mean 'percentage'?",
        id="unknown-subset-key",
    ),
    pytest.param(
        extra("flickr: {perpage: 1}"),
        "flickr.perpage",
        "did you mean 'per_page'?",
        id="unknown-flickr-key",
    ),
    pytest.param(
        extra("image: {size: 1}"),
        "image.size",
        "valid keys here are max_pixels",
        id="unknown-image-key",
    ),
    pytest.param(
        extra("download: {workers: 1}"),
        "download.workers",
        "unknown key",
        id="unknown-download-key",
    ),
    pytest.param(extra("dedup: {mode: drop}"), "dedup.mode", "unknown key", id="unknown-dedup-key"),
    pytest.param(klass("count: 5"), "classes[0].name", "missing", id="missing-name"),
    pytest.param(klass("name: cat"), "classes[0].count", "missing", id="missing-count"),
    pytest.param(
        "classes: [{name: a, count: 900}, {name: b, count: 900}, {name: c, count: -5}]\n",
        "classes[2].count",
        "must be a whole number > 0; got -5",
        id="count-negative",
    ),
    pytest.param(klass("name: cat, count: 0"), "classes[0].count", "> 0", id="count-zero"),
    pytest.param(
        klass("name: cat, count: '100'"), "classes[0].count", "remove the quotes", id="count-string"
    ),
    pytest.param(
        klass("name: cat, count: many"), "classes[0].count", "got 'many'", id="count-word"
    ),
    pytest.param(klass("name: cat, count: yes"), "classes[0].count", "got true", id="count-bool"),
    pytest.param(
        klass("name: cat, count: 10.5"), "classes[0].count", "whole number", id="count-float"
    ),
    pytest.param(klass("name: cat, count: [1]"), "classes[0].count", "got a list", id="count-list"),
    pytest.param(
        klass("name: cat, count: 99999999999999999999"),
        "classes[0].count",
        "at most 2**63 - 1",
        id="count-huge",
    ),
    pytest.param(
        "classes: [{name: cat, count: 900}, {name: dog, count: 900}, {name: Cat, count: 900}]\n",
        "classes[2].name",
        "same folder as classes[0].name 'cat'",
        id="duplicate-name",
    ),
    pytest.param(
        klass("name: no, count: 900"), "classes[0].name", "put it in quotes", id="name-bool"
    ),
    pytest.param(
        klass("name: 2024, count: 900"), "classes[0].name", "put it in quotes", id="name-number"
    ),
    pytest.param(
        klass("name: '', count: 900"), "classes[0].name", "must not be empty", id="name-empty"
    ),
    pytest.param(
        klass("name: a/b, count: 900"), "classes[0].name", "contains '/'", id="name-slash"
    ),
    pytest.param(
        klass("name: 'a\\b', count: 900"),
        "classes[0].name",
        "contains '/' or '\\'",
        id="name-backslash",
    ),
    pytest.param(
        klass("name: '.', count: 900"), "classes[0].name", "not a folder name", id="name-dot"
    ),
    pytest.param(
        klass("name: '..', count: 900"), "classes[0].name", "not a folder name", id="name-dotdot"
    ),
    pytest.param(
        klass("name: .cache, count: 900"),
        "classes[0].name",
        "starts with '.'",
        id="name-leading-dot",
    ),
    pytest.param(klass('name: "a\\0b", count: 900'), "classes[0].name", "U+0000", id="name-nul"),
    pytest.param(
        klass('name: "a\\tb", count: 900'), "classes[0].name", "U+0009", id="name-control"
    ),
    pytest.param(
        klass('name: "a\\nb", count: 900'), "classes[0].name", "U+000A", id="name-newline"
    ),
    pytest.param(
        f"classes: [{{name: {'a' * 101}, count: 900}}]\n",
        "classes[0].name",
        "101 characters",
        id="name-too-long",
    ),
    pytest.param(
        f"classes: [{{name: {chr(0x1F600) * 70}, count: 900}}]\n",
        "classes[0].name",
        "bytes",
        id="name-too-many-bytes",
    ),
    pytest.param(
        klass("name: 'a:b', count: 900"),
        "classes[0].name",
        "not allowed in folder names",
        id="name-colon",
    ),
    pytest.param(klass("name: 'what?', count: 900"), "classes[0].name", "?", id="name-question"),
    pytest.param(klass("name: 'a*', count: 900"), "classes[0].name", "*", id="name-star"),
    pytest.param(klass("name: '<a>', count: 900"), "classes[0].name", "<", id="name-angle"),
    pytest.param(klass("name: 'a|b', count: 900"), "classes[0].name", "|", id="name-pipe"),
    pytest.param(klass("name: 'a\"b', count: 900"), "classes[0].name", '"', id="name-quote"),
    pytest.param(
        klass("name: 'cat ', count: 900"),
        "classes[0].name",
        "ends with a space",
        id="name-trailing-space",
    ),
    pytest.param(
        klass("name: 'cat.', count: 900"),
        "classes[0].name",
        "ends with a space or '.'",
        id="name-trailing-dot",
    ),
    pytest.param(
        klass("name: ' cat', count: 900"),
        "classes[0].name",
        "starts with a space",
        id="name-leading-space",
    ),
    pytest.param(
        klass("name: nul, count: 900"),
        "classes[0].name",
        "reserved device name",
        id="name-windows-device",
    ),
    pytest.param(
        klass("name: summary.txt, count: 900"),
        "classes[0].name",
        "output file",
        id="name-output-file",
    ),
    pytest.param(
        klass("name: attribution.md, count: 900"),
        "classes[0].name",
        "output file",
        id="name-output-file-any-case",
    ),
    pytest.param(
        klass("name: '-cat', count: 900"),
        "classes[0].tags",
        "cannot double as a tag",
        id="name-unusable-as-tag",
    ),
    pytest.param(
        klass("name: cat, count: 900, tags: {a: 1}"),
        "classes[0].tags",
        "must be a list",
        id="tags-mapping",
    ),
    pytest.param(
        klass("name: cat, count: 900, tags: []"),
        "classes[0].tags",
        "is empty",
        id="tags-empty-list",
    ),
    pytest.param(
        klass("name: cat, count: 900, tags: ['cat,dog']"),
        "classes[0].tags[0]",
        "contains a comma",
        id="tags-comma-in-item",
    ),
    pytest.param(
        klass("name: cat, count: 900, tags: [cat, '']"),
        "classes[0].tags[1]",
        "is empty",
        id="tags-empty-item",
    ),
    pytest.param(
        klass("name: cat, count: 900, tags: 'cat,,dog'"),
        "classes[0].tags",
        "empty tag",
        id="tags-empty-in-string",
    ),
    pytest.param(
        klass("name: cat, count: 900, tags: [cat, 7]"),
        "classes[0].tags[1]",
        "put it in quotes",
        id="tags-number",
    ),
    pytest.param(
        klass("name: cat, count: 900, tags: [cat, '-']"),
        "classes[0].tags[1]",
        "no tag after it",
        id="tags-bare-minus",
    ),
    pytest.param(
        klass("name: cat, count: 900, tags: [-dog]"),
        "classes[0].tags",
        "only excludes",
        id="tags-only-exclusions",
    ),
    pytest.param(
        klass("name: cat, count: 900, tags: [cat, -cat]"),
        "classes[0].tags",
        "both includes and excludes 'cat'",
        id="tags-contradiction",
    ),
    pytest.param(
        klass(
            "name: cat, count: 900, tag_mode: all, tags: ["
            + ", ".join(f"t{i}" for i in range(21))
            + "]"
        ),
        "classes[0].tags",
        "at most 20",
        id="tags-all-over-20",
    ),
    pytest.param(
        klass("name: cat, count: 900, tag_mode: every"),
        "classes[0].tag_mode",
        "must be one of any, all",
        id="tag-mode-bad",
    ),
    pytest.param(
        extra("train_test_split: [1]"), "train_test_split", "must be a mapping", id="split-list"
    ),
    pytest.param(
        extra("train_test_split: {type: percent, test_size: 10}"),
        "train_test_split.type",
        "must be one of absolute, proportional",
        id="split-type-bad",
    ),
    pytest.param(
        extra("train_test_split: {type: proportionl, test_size: 10}"),
        "train_test_split.type",
        "did you mean 'proportional'?",
        id="split-type-typo",
    ),
    pytest.param(
        extra("train_test_split: {seed: abc}"),
        "train_test_split.seed",
        "whole number",
        id="split-seed-string",
    ),
    pytest.param(
        "classes: [{name: a, count: 900}, {name: b, count: 900}, {name: c, count: 900},"
        " {name: frog, count: 300}]\ntrain_test_split: {type: absolute, test_size: 500}\n",
        "train_test_split.test_size",
        "500 is not smaller than classes[3] (frog) count 300; lower test_size or raise the count",
        id="absolute-too-big",
    ),
    pytest.param(
        "classes: [{name: cat, count: 500}]\ntrain_test_split: {test_size: 500}\n",
        "train_test_split.test_size",
        "not smaller than classes[0] (cat)",
        id="absolute-equal-count",
    ),
    pytest.param(
        klass("name: cat, count: 100"),
        "train_test_split.test_size",
        "500 (the default) is not smaller",
        id="absolute-default-too-big",
    ),
    pytest.param(
        extra("train_test_split: {test_size: -1}"),
        "train_test_split.test_size",
        ">= 0",
        id="absolute-negative",
    ),
    pytest.param(
        extra("train_test_split: {test_size: 0.2}"),
        "train_test_split.test_size",
        "use type: proportional",
        id="absolute-float",
    ),
    pytest.param(
        extra("train_test_split: {test_size: '500'}"),
        "train_test_split.test_size",
        "remove the quotes",
        id="absolute-string",
    ),
    pytest.param(
        extra("train_test_split: {type: proportional, test_size: 0}"),
        "train_test_split.test_size",
        "a fraction between 0 and 1",
        id="proportional-zero",
    ),
    pytest.param(
        extra("train_test_split: {type: proportional, test_size: 100}"),
        "train_test_split.test_size",
        "got 100",
        id="proportional-100",
    ),
    pytest.param(
        extra("train_test_split: {type: proportional, test_size: -0.2}"),
        "train_test_split.test_size",
        "percent from 1 to under 100",
        id="proportional-negative",
    ),
    pytest.param(
        extra("train_test_split: {type: proportional, test_size: .nan}"),
        "train_test_split.test_size",
        "got nan",
        id="proportional-nan",
    ),
    pytest.param(
        extra("train_test_split: {type: proportional}"),
        "train_test_split.test_size",
        "missing",
        id="proportional-missing",
    ),
    pytest.param(
        extra("train_test_split: {type: proportional, test_size: true}"),
        "train_test_split.test_size",
        "got true",
        id="proportional-bool",
    ),
    pytest.param(
        extra("subset: {seed: 1}"), "subset.percentage", "missing", id="subset-missing-percentage"
    ),
    pytest.param(extra("subset: {percentage: 0}"), "subset.percentage", "> 0", id="subset-zero"),
    pytest.param(
        extra("subset: {percentage: 150}"), "subset.percentage", "(0, 100]", id="subset-over-100"
    ),
    pytest.param(extra("subset: ten"), "subset", "must be a mapping", id="subset-string"),
    pytest.param(extra("output_dir: ''"), "output_dir", "must not be empty", id="output-dir-empty"),
    pytest.param(extra("output_dir: [a]"), "output_dir", "got a list", id="output-dir-list"),
    pytest.param(extra("output_dir:"), "output_dir", "got nothing (null)", id="output-dir-null"),
    pytest.param(extra("flickr: [a, b]"), "flickr", "must be a mapping", id="flickr-list"),
    pytest.param(
        extra("flickr: {api_url: 'not a url'}"),
        "flickr.api_url",
        "not an http(s) URL",
        id="api-url-bad",
    ),
    pytest.param(extra("flickr: {api_url: 5}"), "flickr.api_url", "a URL", id="api-url-number"),
    pytest.param(
        extra("flickr: {per_page: 900}"),
        "flickr.per_page",
        "must be between 1 and 500; got 900",
        id="per-page-high",
    ),
    pytest.param(
        extra("flickr: {per_page: 0}"), "flickr.per_page", "between 1 and 500", id="per-page-zero"
    ),
    pytest.param(
        extra("flickr: {per_page: lots}"),
        "flickr.per_page",
        "whole number between 1 and 500",
        id="per-page-string",
    ),
    pytest.param(
        extra("flickr: {calls_per_hour: 0}"),
        "flickr.calls_per_hour",
        "> 0",
        id="calls-per-hour-zero",
    ),
    pytest.param(
        extra("flickr: {license: [4, 17]}"),
        "flickr.license[1]",
        "between 0 and 16",
        id="license-high",
    ),
    pytest.param(
        extra("flickr: {license: [by-sa]}"),
        "flickr.license[0]",
        "whole number",
        id="license-string",
    ),
    pytest.param(
        extra("flickr: {license: {a: 1}}"),
        "flickr.license",
        "list of license ids",
        id="license-mapping",
    ),
    pytest.param(
        extra("flickr: {license: opne}"),
        "flickr.license",
        "must be a preset (any, open, cc-by, public-domain) or a list of license ids 0..16; "
        "got 'opne'; did you mean 'open'?",
        id="license-preset-typo",
    ),
    pytest.param(
        extra("flickr: {license: true}"),
        "flickr.license",
        "got true",
        id="license-bool",
    ),
    pytest.param(
        extra("flickr: {license: [4, open]}"),
        "flickr.license[1]",
        "a preset stands alone: license: open",
        id="license-preset-in-a-list",
    ),
    pytest.param(
        extra("flickr: {sort: newest}"),
        "flickr.sort",
        "must be one of date-posted-desc",
        id="sort-bad",
    ),
    pytest.param(
        extra("flickr: {sort: relevence}"),
        "flickr.sort",
        "did you mean 'relevance'?",
        id="sort-typo",
    ),
    pytest.param(
        extra("flickr: {safe_search: 4}"),
        "flickr.safe_search",
        "between 1 and 3",
        id="safe-search-bad",
    ),
    pytest.param(
        extra("flickr: {media: images}"),
        "flickr.media",
        "must be one of photos, videos, all",
        id="media-bad",
    ),
    pytest.param(
        extra("flickr: {media: photo}"),
        "flickr.media",
        "did you mean 'photos'?",
        id="media-typo",
    ),
    pytest.param(extra("flickr: {media: 1}"), "flickr.media", "got 1", id="media-number"),
    pytest.param(
        extra("flickr: {retries: 21}"), "flickr.retries", "between 0 and 20", id="retries-high"
    ),
    pytest.param(
        extra("flickr: {retries: -1}"), "flickr.retries", "between 0 and 20", id="retries-negative"
    ),
    pytest.param(extra("flickr: {backoff_s: 0}"), "flickr.backoff_s", "> 0", id="backoff-zero"),
    pytest.param(extra("flickr: {backoff_s: .inf}"), "flickr.backoff_s", "> 0", id="backoff-inf"),
    pytest.param(
        extra("image: {max_side: 8}"), "image.max_side", "between 16 and 4096", id="max-side-low"
    ),
    pytest.param(
        extra("image: {max_side: 5000}"),
        "image.max_side",
        "between 16 and 4096",
        id="max-side-high",
    ),
    pytest.param(
        extra("image: {quality: 100}"), "image.quality", "between 1 and 95", id="quality-high"
    ),
    pytest.param(
        extra("image: {quality: 0}"), "image.quality", "between 1 and 95", id="quality-zero"
    ),
    pytest.param(extra("image: {min_side: 0}"), "image.min_side", "> 0", id="min-side-zero"),
    pytest.param(
        extra("image: {max_side: 100, min_side: 200}"),
        "image.min_side",
        "larger than image.max_side 100",
        id="min-side-over-max",
    ),
    pytest.param(extra("image: {max_pixels: 0}"), "image.max_pixels", "> 0", id="max-pixels-zero"),
    pytest.param(extra("image: big"), "image", "must be a mapping", id="image-string"),
    pytest.param(
        extra("download: {concurrency: 0}"),
        "download.concurrency",
        "between 1 and 1024",
        id="concurrency-zero",
    ),
    pytest.param(
        extra("download: {concurrency: 2000}"),
        "download.concurrency",
        "between 1 and 1024",
        id="concurrency-high",
    ),
    pytest.param(extra("download: {timeout_s: 0}"), "download.timeout_s", "> 0", id="timeout-zero"),
    pytest.param(
        extra("download: {timeout_s: 30s}"), "download.timeout_s", "got '30s'", id="timeout-string"
    ),
    pytest.param(
        extra("download: {idle_timeout_s: 0}"),
        "download.idle_timeout_s",
        "> 0",
        id="idle-timeout-zero",
    ),
    pytest.param(
        extra("download: {idle_timeout_s: .inf}"),
        "download.idle_timeout_s",
        "got inf",
        id="idle-timeout-infinite",
    ),
    pytest.param(
        extra("download: {idle_timeout: 5}"),
        "download.idle_timeout",
        "did you mean 'idle_timeout_s'?",
        id="idle-timeout-misspelled",
    ),
    pytest.param(
        extra("download: {max_bytes: -1}"), "download.max_bytes", "> 0", id="max-bytes-negative"
    ),
    pytest.param(
        extra("download: {queue_size: 0}"), "download.queue_size", "> 0", id="queue-size-zero"
    ),
    pytest.param(
        extra("dedup: {cross_class: merge}"),
        "dedup.cross_class",
        "must be one of drop, keep-first",
        id="cross-class-bad",
    ),
    pytest.param(
        extra("dedup: {cross_class: keep_first}"),
        "dedup.cross_class",
        "did you mean 'keep-first'?",
        id="cross-class-typo",
    ),
    pytest.param(
        extra("dedup: {phash_distance: 9}"),
        "dedup.phash_distance",
        "between 0 and 8",
        id="phash-high",
    ),
    pytest.param(
        extra("dedup: {phash_distance: -1}"),
        "dedup.phash_distance",
        "between 0 and 8",
        id="phash-negative",
    ),
]


@pytest.mark.parametrize(("text", "key_path", "fragment"), ERROR_CASES)
def test_error_names_key_path_in_one_line(text: str, key_path: str, fragment: str) -> None:
    message = error_of(text)

    assert message.startswith(f"config.yaml: {key_path}: "), message
    assert fragment in message, message
    assert "\n" not in message and "\r" not in message
    assert "; " in message  # problem; what would be valid


def test_unknown_key_message_matches_the_documented_form() -> None:
    assert error_of(BASE + "colour: red\n") == (
        "config.yaml: colour: unknown key; valid keys here are classes, dedup, download, exclude, "
        "export, flickr, image, output_dir, subset, train_test_split"
    )


def test_media_message_matches_the_documented_form() -> None:
    assert error_of(BASE + "flickr: {media: video}\n") == (
        "config.yaml: flickr.media: must be one of photos, videos, all; got 'video'; "
        "did you mean 'videos'?"
    )


def test_per_page_message_matches_the_documented_form() -> None:
    assert error_of(BASE + "flickr: {per_page: 900}\n") == (
        "config.yaml: flickr.per_page: must be between 1 and 500; got 900"
    )


def test_parse_config_default_source_is_config() -> None:
    with pytest.raises(ConfigError, match=r"^config: classes: missing; "):
        parse_config({}, environ={})


def test_errors_never_leak_other_exceptions_for_odd_values() -> None:
    odd_values: list[object] = [
        None, True, 0, -1, 1.5, float("nan"), float("inf"), "", "x" * 10_000, [], [None], {},
        {"a": None}, {1: 2}, {(1, 2): 3}, b"bytes", {1, 2}, 10**5000,
    ]  # fmt: skip
    keys = ["classes", "train_test_split", "subset", "flickr", "image", "download", "dedup"]
    for value in odd_values:
        for key in keys:
            data: dict[object, object] = {"classes": [{"name": "cat", "count": 1000}], key: value}
            try:
                parse_config(data, environ={})
            except ConfigError as exc:
                assert "\n" not in str(exc)
        for field in ("name", "count", "tags", "tag_mode"):
            try:
                parse_config({"classes": [{"name": "c", "count": 1000, field: value}]}, environ={})
            except ConfigError as exc:
                assert "\n" not in str(exc) and len(str(exc)) < 600


# ---------------------------------------------------------------------------------------------
# File-level errors (load_config)


def load_error(path: Path | str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = load_error(path)
    assert message.startswith(f"{path}: cannot read the config file: no such file")


def test_relative_missing_file_says_where_it_looked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    message = load_error("nope.yaml")
    assert message.startswith("nope.yaml: cannot read the config file: ")
    assert str(tmp_path) in message


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    assert "is a directory" in load_error(tmp_path)


def test_yaml_syntax_error_has_line_number(tmp_path: Path) -> None:
    path = write(tmp_path, "classes:\n  - name: cat\n   count: 5\n")
    message = load_error(path)
    assert message.startswith(f"{path}: line 3, column 4: not valid YAML: ")


def test_yaml_tab_indent_gets_a_hint(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, "classes:\n\t- name: cat\n"))
    assert ": line 2, column 1: " in message and "tabs" in message


def test_yaml_duplicate_key_is_an_error(tmp_path: Path) -> None:
    text = BASE + "flickr: {per_page: 10}\nflickr: {sort: relevance}\n"
    message = load_error(write(tmp_path, text))
    assert ": line 3, column 1: " in message
    assert "'flickr' appears twice (first on line 2)" in message


def test_yaml_merge_keys_still_work(tmp_path: Path) -> None:
    text = "base: &b {name: cat, count: 1000}\n"
    path = write(tmp_path, "classes:\n  - <<: {name: cat, count: 1000}\n    count: 2000\n")
    assert load_config(path, environ={}).classes[0].count == 2000
    assert "base" in load_error(write(tmp_path, text + BASE, "anchors.yaml"))  # unknown key


def test_yaml_several_documents(tmp_path: Path) -> None:
    assert "single document" in load_error(write(tmp_path, BASE + "---\n" + BASE))


def test_not_utf8(tmp_path: Path) -> None:
    assert "not UTF-8" in load_error(write(tmp_path, b"classes: [{name: caf\xe9, count: 5}]"))


def test_utf8_bom_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeff" + BASE)
    assert len(load_config(path, environ={}).classes) == 2


def test_control_character_in_yaml(tmp_path: Path) -> None:
    message = load_error(write(tmp_path, BASE + 'output_dir: "\x01"\n'))
    assert ": line 2: " in message and "U+0001" in message


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path, "# only a comment\n")
    assert load_error(path) == (
        f"{path}: (top level): the config is empty; "
        "list the classes, e.g. classes: [{name: cat, count: 1000}]"
    )


def test_top_level_not_a_mapping_in_file(tmp_path: Path) -> None:
    path = write(tmp_path, "- cat\n- dog\n")
    assert load_error(path).startswith(f"{path}: (top level): must be a mapping")


@pytest.mark.parametrize(
    "text",
    [
        "classes: 2020-13-45\n",  # PyYAML's date constructor raises ValueError
        "classes: " + "1" * 5000 + "\n",  # int() refuses > 4300 digits
        "classes: " + "[" * 5000 + "]" * 5000 + "\n",  # recursion
    ],
    ids=["bad-date", "huge-int", "deep-nesting"],
)
def test_yaml_constructor_failures_are_config_errors(tmp_path: Path, text: str) -> None:
    assert "config.yaml: " in load_error(write(tmp_path, text))


def test_load_config_accepts_str_path(tmp_path: Path) -> None:
    assert load_config(str(write(tmp_path, BASE)), environ={}).classes[0].name == "cat"
