"""Typed configuration: the YAML file a user writes, validated into frozen dataclasses.

Every problem is reported as one line naming the file, the key path and what would be valid
(``ConfigError``), never as a traceback. ``docs/configuration.md`` is the user-facing reference
for every key; keep the two in step.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, NoReturn, cast
from urllib.parse import urlsplit

import yaml

from asyncds.retry import RetryPolicy

DEFAULT_API_URL = "https://api.flickr.com/services/rest/"
API_URL_ENV = "FLICKR_API_URL"

FLICKR_SORTS = (
    "date-posted-desc",
    "date-posted-asc",
    "date-taken-asc",
    "date-taken-desc",
    "interestingness-desc",
    "interestingness-asc",
    "relevance",
)
# flickr.photos.search `media`. Flickr's own default is all, which returns videos too.
FLICKR_MEDIA = ("photos", "videos", "all")
# Optional exports written after assembly (``export:``, ``--export``); see docs/configuration.md.
EXPORT_FORMATS = ("webdataset", "parquet", "urls")
MAX_TAGS_ALL = 20  # Flickr's limit on tags combined with tag_mode=all
MAX_LICENSE_ID = 16  # license ids are 0..16 since Flickr's 2025 renumbering
# flickr.license presets: named sets of Flickr license ids (names in flickr.LICENSES).
LICENSE_PRESETS: dict[str, tuple[int, ...]] = {
    "any": (),  # no filter: All Rights Reserved photos too
    # CC BY and BY-SA 2.0/4.0, No known copyright restrictions, US Government Work, CC0, PDM:
    # reusable, commercially too, with at most attribution and share-alike.
    "open": (4, 5, 7, 8, 9, 10, 11, 12),
    "cc-by": (4, 11),
    "public-domain": (7, 8, 9, 10),
}
MAX_INT = 2**63 - 1
# Beside the config file: photo ids to exclude, one a line (as well as the config's exclude:).
EXCLUDE_FILE = "exclude.txt"
MAX_PHOTO_ID_DIGITS = 19  # within a signed 64-bit integer; Flickr's ids have 11 digits today
EXCLUDE_HINT = "give Flickr photo ids, e.g. exclude: [52841234567, '52841234568']"
EXCLUDE_FILE_HINT = "write one Flickr photo id (its digits) per line; '#' starts a comment"
MAX_NAME_CHARS = 100
MAX_NAME_BYTES = 255  # ext4/APFS/NTFS limit on one path component
ILLEGAL_NAME_CHARS = '<>:"|?*'
# Device names Windows refuses as folder names, with or without an extension.
WINDOWS_RESERVED_NAMES = frozenset(
    ["con", "prn", "aux", "nul"]
    + [f"com{i}" for i in range(1, 10)]
    + [f"lpt{i}" for i in range(1, 10)]
)
# Files asyncds writes beside the class folders (a class of the same name would clash;
# --fresh deletes exactly these and the class folders).
OUTPUT_FILE_NAMES = frozenset(
    {
        "train_test_split.json",
        "train_test_split_subset.json",
        "dataset.tgz",
        "urls_data.json",
        "metadata.jsonl",
        "summary.txt",
        "summary.json",
        "ATTRIBUTION.md",
        "README.md",
        "croissant.json",
        "report.html",
        "asyncds.log",
        "asyncds-state.sqlite",
    }
)


class ConfigError(Exception):
    """A bad configuration; ``str()`` is one line: ``file: key.path: problem; what is valid``."""

    def __init__(self, message: str) -> None:
        # Callers print this as one log line; never let a stray newline split it.
        super().__init__(message.replace("\r", "\\r").replace("\n", "\\n"))


@dataclass(frozen=True, slots=True)
class ClassSpec:
    name: str
    count: int
    tags: tuple[str, ...]
    tag_mode: Literal["any", "all"] = "any"

    @property
    def flickr_tags(self) -> str:
        """The ``tags`` parameter of ``flickr.photos.search``: comma-separated, ``-`` excludes."""
        return ",".join(self.tags)


@dataclass(frozen=True, slots=True)
class SplitSpec:
    seed: int = 42
    type: Literal["absolute", "proportional"] = "absolute"
    # absolute: images per class (an int); proportional: a fraction in (0, 1) or a percent in
    # [1, 100) exactly as the user wrote it (see ``fraction``).
    test_size: float = 500

    @property
    def fraction(self) -> float:
        """The share of each class that goes to test (proportional splits only)."""
        return float(self._exact_fraction())

    def _exact_fraction(self) -> Fraction:
        if self.type != "proportional":
            raise ValueError("an absolute split has no fraction; use test_count(n)")
        # Exact decimal arithmetic, so "10% of 25" is 2.5 and rounds the documented way.
        size = Fraction(str(self.test_size))
        return size if size < 1 else size / 100

    def test_count(self, n: int) -> int:
        """How many of a class's ``n`` images go to test.

        absolute: ``test_size``, except for a class that ended short (``n <= test_size``, which
        would leave no training images): then ``n // 2``.
        proportional: ``n * fraction`` rounded to nearest, halves up; at least 1 when ``n >= 2``,
        never all of them (at most ``n - 1``).
        """
        if n <= 0:
            return 0
        if self.type == "absolute":
            size = int(self.test_size)
            return size if n > size else n // 2
        exact = n * self._exact_fraction()
        count = math.floor(exact + Fraction(1, 2))
        if count == 0 and n >= 2 and exact > 0:
            count = 1
        return min(count, n - 1)

    def describe(self) -> str:
        """A human description for logs and summaries."""
        if self.type == "absolute":
            return (
                f"{int(self.test_size)} images of each class in test "
                f"(half of a class that ends with {int(self.test_size)} or fewer), seed {self.seed}"
            )
        percent = float(self._exact_fraction() * 100)
        return f"{percent:g}% of each class in test, seed {self.seed}"


@dataclass(frozen=True, slots=True)
class SubsetSpec:
    percentage: float
    seed: int = 42

    @property
    def fraction(self) -> float:
        return self.percentage / 100


@dataclass(frozen=True, slots=True)
class FlickrSettings:
    api_url: str = DEFAULT_API_URL
    per_page: int = 500
    calls_per_hour: int = 3600
    license: tuple[int, ...] = ()
    sort: str = "relevance"
    safe_search: int = 1
    media: str = "photos"  # a video's url_X sizes are still frames: no dataset wants them
    retries: int = 5
    backoff_s: float = 1.0

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(retries=self.retries, backoff_s=self.backoff_s)


@dataclass(frozen=True, slots=True)
class ImageSettings:
    max_side: int = 240
    quality: int = 90
    min_side: int = 64
    max_pixels: int = 50_000_000


@dataclass(frozen=True, slots=True)
class DownloadSettings:
    concurrency: int = 128
    timeout_s: float = 30.0  # one attempt, all of it
    max_bytes: int = 20_000_000
    queue_size: int = 256
    outage_s: float = 30.0
    idle_timeout_s: float = 10.0  # no bytes for this long: the attempt has stalled


@dataclass(frozen=True, slots=True)
class DedupSettings:
    cross_class: Literal["drop", "keep-first"] = "drop"
    phash_distance: int = 4


@dataclass(frozen=True, slots=True)
class Config:
    classes: tuple[ClassSpec, ...]
    split: SplitSpec = field(default_factory=SplitSpec)
    output_dir: Path = Path("outputs")
    subset: SubsetSpec | None = None
    flickr: FlickrSettings = field(default_factory=FlickrSettings)
    image: ImageSettings = field(default_factory=ImageSettings)
    download: DownloadSettings = field(default_factory=DownloadSettings)
    dedup: DedupSettings = field(default_factory=DedupSettings)
    export: tuple[str, ...] = ()  # of EXPORT_FORMATS, in the order given
    # Flickr photo ids never to keep, in any class: ``exclude:`` and exclude.txt beside the
    # config (asyncds.exclude applies them).
    exclude: frozenset[str] = frozenset()


# --------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate a YAML config file; every problem is a one-line ``ConfigError``."""
    path = Path(path)
    source = str(path)
    text = _read_text(path, "the config file", "give a YAML file", missing_ok=False)
    assert text is not None
    data = _parse_yaml(text, source)
    config = parse_config(data, source=source, environ=environ)
    listed = read_exclude_file(path.parent / EXCLUDE_FILE)
    if listed:
        config = dataclasses.replace(config, exclude=config.exclude | listed)
    return config


def _read_text(path: Path, what: str, not_a_folder: str, *, missing_ok: bool) -> str | None:
    """The UTF-8 text of ``path`` (a BOM is fine); None when it is missing and that is fine.
    Anything else that keeps it from being read is a one-line ``ConfigError``."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return None
        where = "" if path.is_absolute() else f" (looked in {Path.cwd()})"
        _fail(source, f"cannot read {what}", f"no such file{where}; check the path")
    except IsADirectoryError:
        _fail(source, f"cannot read {what}", f"it is a directory; {not_a_folder}")
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        _fail(source, f"cannot read {what}", f"{reason}; check the path and permissions")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        _fail(source, "not UTF-8 text", f"undecodable byte at offset {exc.start}; save as UTF-8")


def read_exclude_file(path: Path) -> frozenset[str]:
    """The photo ids of an ``exclude.txt``: one a line, ``#`` starts a comment, blank lines
    are fine. No file: none. A line that is not a photo id is a ``ConfigError``."""
    source = str(path)
    text = _read_text(path, "the exclude list", "make it a text file", missing_ok=True)
    if text is None:
        return frozenset()
    check = _Checker(source)
    ids: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.split("#", 1)[0].strip()
        if item:
            ids.add(_photo_id(check, item, f"line {number}", EXCLUDE_FILE_HINT))
    return frozenset(ids)


class _DuplicateKeyError(yaml.constructor.ConstructorError):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently,
    so a second ``flickr:`` section would quietly discard the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                continue
            ident = (key_node.tag, key_node.value)
            if ident in seen:
                raise _DuplicateKeyError(
                    None,
                    None,
                    f"key {key_node.value!r} appears twice (first on line {seen[ident] + 1})",
                    key_node.start_mark,
                )
            seen[ident] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: str) -> object:
    try:
        # _StrictLoader is a SafeLoader: plain data only, never Python objects.
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = _one_line(exc.problem or exc.context or "invalid syntax")
        if exc.context and exc.problem and exc.problem.startswith("but "):
            # e.g. "expected a single document in the stream, but found another document"
            problem = _one_line(f"{exc.context}, {exc.problem}")
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        if isinstance(exc, _DuplicateKeyError):
            hint = "keep one of them (merge their contents)"
        elif "\\t" in problem:
            hint = "indent with spaces: YAML does not allow tabs"
        else:
            hint = "check indentation, the ':' after each key and quotes"
        _fail(source, where, f"not valid YAML: {problem}; {hint}")
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        char = exc.character if isinstance(exc.character, str) else chr(exc.character)
        _fail(
            source,
            f"line {line}",
            f"not valid YAML: character U+{ord(char):04X} is not allowed; remove it",
        )
    except yaml.YAMLError as exc:
        _fail(source, "(file)", f"not valid YAML: {_one_line(str(exc))}; fix the syntax")
    except RecursionError:
        _fail(source, "(file)", "nested too deeply to read; simplify the file")
    except (ValueError, OverflowError, TypeError) as exc:
        # PyYAML's own constructors raise these, e.g. for the date 2020-13-45 or a huge int.
        _fail(source, "(file)", f"not valid YAML: {_one_line(str(exc))[:200]}; fix that value")


def _fail(source: str, where: str, message: str) -> NoReturn:
    raise ConfigError(f"{source}: {where}: {message}")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------------------------
# Validation

_MISSING: Any = object()

TOP_KEYS = (
    "classes",
    "dedup",
    "download",
    "exclude",
    "export",
    "flickr",
    "image",
    "output_dir",
    "subset",
    "train_test_split",
)
CLASS_KEYS = ("count", "name", "tag_mode", "tags")
SPLIT_KEYS = ("seed", "test_size", "type")
SUBSET_KEYS = ("percentage", "seed")
FLICKR_KEYS = (
    "api_url",
    "backoff_s",
    "calls_per_hour",
    "license",
    "media",
    "per_page",
    "retries",
    "safe_search",
    "sort",
)
IMAGE_KEYS = ("max_pixels", "max_side", "min_side", "quality")
DOWNLOAD_KEYS = (
    "concurrency",
    "idle_timeout_s",
    "max_bytes",
    "outage_s",
    "queue_size",
    "timeout_s",
)
DEDUP_KEYS = ("cross_class", "phash_distance")


class _Checker:
    """Knows the source name so every error says file and key path the same way."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, path: str, problem: str, valid: str) -> NoReturn:
        _fail(self.source, path, f"{problem}; {valid}")

    def mapping(self, value: object, path: str, allowed: Iterable[str]) -> dict[str, object]:
        """A section: null means "all defaults"; unknown keys are an error with a suggestion."""
        allowed = sorted(allowed)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(
                path,
                f"must be a mapping of keys ({', '.join(allowed)}); got {_show(value)}",
                f"write '{_last(path)}:' followed by indented 'key: value' lines",
            )
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                plain = isinstance(key, str) and key.isprintable() and 0 < len(key) <= 60
                key_text = key if plain else _show(key)
                where = _join(path, key_text)
                valid = f"valid keys here are {', '.join(allowed)}"
                if isinstance(key, str):
                    close = difflib.get_close_matches(key.lower(), allowed, n=1, cutoff=0.6)
                    if close:
                        valid = f"did you mean {close[0]!r}? {valid}"
                self.fail(where, "unknown key", valid)
        return cast(dict[str, object], value)

    def integer(
        self, value: object, path: str, lo: int | None = None, hi: int | None = None
    ) -> int:
        if lo is not None and hi is not None:
            bounds = f"between {lo} and {hi}"
        elif lo == 1:
            bounds = "> 0"
        elif lo is not None:
            bounds = f">= {lo}"
        else:
            bounds = ""
        kind = f"a whole number {bounds}".rstrip()
        # bool is an int subclass, but "count: yes" is never meant as 1.
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(path, f"must be {kind}", f"got {_show(value)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            problem = f"must be {bounds}" if hi is not None else f"must be {kind}"
            self.fail(path, problem, f"got {_show(value)}")
        if abs(value) > MAX_INT:
            # Every number ends up in SQLite or JSON; keep it within a signed 64-bit integer.
            self.fail(path, f"must be {kind} and at most 2**63 - 1", f"got {_show(value)}")
        return value

    def number(self, value: object, path: str, *, gt: float) -> float:
        kind = f"a number > {gt:g}"
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if not is_number or not _finite(value) or value <= gt:
            self.fail(path, f"must be {kind}", f"got {_show(value)}")
        return float(value)

    def choice(self, value: object, path: str, choices: tuple[str, ...]) -> str:
        listing = ", ".join(choices)
        if not isinstance(value, str):
            self.fail(path, f"must be one of {listing}", f"got {_show(value)}")
        normal = value.strip().lower()
        if normal not in choices:
            close = difflib.get_close_matches(normal, choices, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.fail(path, f"must be one of {listing}", f"got {_show(value)}{hint}")
        return normal

    def text(self, value: object, path: str, what: str) -> str:
        if not isinstance(value, str):
            quote = "; put it in quotes" if isinstance(value, int | float) else ""
            self.fail(path, f"must be {what}", f"got {_show(value)}{quote}")
        return value


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _last(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def _show(value: object) -> str:
    """A short, one-line rendering of a user's value. Containers are never repr'd: YAML aliases
    can make them exponentially large."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a yes/no value)"
    if isinstance(value, str):
        shown = repr(value) if len(value) <= 60 else repr(value[:57]) + "..."
        try:
            numeric = math.isfinite(float(value))
        except ValueError:
            numeric = False
        if not numeric:
            return shown
        return f"{shown} (text, not a number: remove the quotes)"
    if isinstance(value, int) and value.bit_length() > 128:
        # str() of a huge int is slow and, past 4300 digits, an error.
        return "a number far too large"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def parse_config(
    data: object, *, source: str = "config", environ: Mapping[str, str] | None = None
) -> Config:
    """Validate already-parsed YAML (a dict) into a ``Config``.

    ``environ`` (default ``os.environ``) supplies ``FLICKR_API_URL``, which overrides
    ``flickr.api_url``. ``source`` names the input in error messages.
    """
    check = _Checker(source)
    if data is None:
        check.fail(
            "(top level)",
            "the config is empty",
            "list the classes, e.g. classes: [{name: cat, count: 1000}]",
        )
    if not isinstance(data, dict):
        check.fail(
            "(top level)",
            f"must be a mapping of keys such as classes and train_test_split; got {_show(data)}",
            "see docs/configuration.md",
        )
    top = check.mapping(data, "", TOP_KEYS)

    classes = _parse_classes(check, top.get("classes", _MISSING))
    split = _parse_split(check, top.get("train_test_split"), classes)
    output_dir = _parse_output_dir(check, top.get("output_dir", _MISSING))
    subset = _parse_subset(check, top.get("subset"))
    env = os.environ if environ is None else environ
    flickr = _parse_flickr(check, top.get("flickr"), env)
    return Config(
        classes=classes,
        split=split,
        output_dir=output_dir,
        subset=subset,
        flickr=flickr,
        image=_parse_image(check, top.get("image")),
        download=_parse_download(check, top.get("download")),
        dedup=_parse_dedup(check, top.get("dedup")),
        export=_parse_export(check, top.get("export"), "export"),
        exclude=_parse_exclude(check, top.get("exclude")),
    )


def _parse_exclude(check: _Checker, value: object) -> frozenset[str]:
    """``exclude:``: a list of photo ids, bare (YAML reads them as numbers) or quoted."""
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        check.fail("exclude", f"must be a list of photo ids; got {_show(value)}", EXCLUDE_HINT)
    return frozenset(
        _photo_id(check, item, f"exclude[{index}]", EXCLUDE_HINT)
        for index, item in enumerate(value)
    )


def _photo_id(check: _Checker, value: object, path: str, valid: str) -> str:
    """A Flickr photo id as text: a whole number > 0, written bare or quoted."""
    problem = "must be a Flickr photo id (a whole number > 0, as in the photo's page address)"
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0 or value.bit_length() > 63:
            check.fail(path, problem, f"got {_show(value)}; {valid}")
        return str(value)
    if not isinstance(value, str):
        check.fail(path, problem, f"got {_show(value)}; {valid}")
    text = value.strip()
    plain = text.isascii() and text.isdigit()
    if not plain or text.startswith("0") or len(text) > MAX_PHOTO_ID_DIGITS or int(text) > MAX_INT:
        shown = repr(text) if len(text) <= 60 else repr(text[:57]) + "..."
        check.fail(path, problem, f"got {shown}; {valid}")
    return text


def parse_export(value: str, *, source: str = "--export") -> tuple[str, ...]:
    """``--export webdataset,parquet`` checked like the config's ``export`` (ConfigError)."""
    return _parse_export(_Checker(source), value, "value")


def _parse_export(check: _Checker, value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    # A comma-separated string (the command line's form) or a YAML list.
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        check.fail(
            path,
            f"must be a list of export formats; got {_show(value)}",
            f"valid values are {', '.join(EXPORT_FORMATS)}, e.g. export: [webdataset, parquet]",
        )
    chosen: list[str] = []
    for index, item in enumerate(items):
        where = f"{path}[{index}]" if isinstance(value, list) else path
        name = check.choice(item, where, EXPORT_FORMATS)
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def _parse_classes(check: _Checker, value: object) -> tuple[ClassSpec, ...]:
    example = "e.g. classes: [{name: cat, count: 1000}, {name: dog, count: 1000}]"
    if value is _MISSING:
        check.fail("classes", "missing", f"list the classes to download, {example}")
    if value is None or value == []:
        check.fail("classes", "is empty", f"list at least one class, {example}")
    if not isinstance(value, list):
        check.fail("classes", f"must be a list of classes; got {_show(value)}", example)
    specs: list[ClassSpec] = []
    first_seen: dict[str, int] = {}
    for index, item in enumerate(value):
        spec = _parse_class(check, item, f"classes[{index}]")
        # Folder names compare case-insensitively (and unnormalised) on macOS and Windows.
        folded = unicodedata.normalize("NFC", spec.name).casefold()
        if folded in first_seen:
            other = first_seen[folded]
            check.fail(
                f"classes[{index}].name",
                f"{spec.name!r} is the same folder as classes[{other}].name "
                f"{specs[other].name!r} (names are compared ignoring case)",
                "give each class a distinct name",
            )
        first_seen[folded] = index
        specs.append(spec)
    return tuple(specs)


def _parse_class(check: _Checker, value: object, path: str) -> ClassSpec:
    if not isinstance(value, dict):
        check.fail(
            path,
            f"must be a mapping with name and count; got {_show(value)}",
            "write '- name: cat' with 'count: 1000' indented under it",
        )
    entry = check.mapping(value, path, CLASS_KEYS)
    if "name" not in entry:
        check.fail(f"{path}.name", "missing", "every class needs a name, e.g. name: cat")
    name = _class_name(check, entry["name"], f"{path}.name")
    if "count" not in entry:
        check.fail(
            f"{path}.count", "missing", "say how many images the class should hold, e.g. 1000"
        )
    count = check.integer(entry["count"], f"{path}.count", lo=1)
    tag_mode = check.choice(entry.get("tag_mode", "any"), f"{path}.tag_mode", ("any", "all"))
    tags = _parse_tags(check, entry.get("tags", _MISSING), f"{path}.tags", name)
    if tag_mode == "all" and len(tags) > MAX_TAGS_ALL:
        check.fail(
            f"{path}.tags",
            f"has {len(tags)} tags but tag_mode all allows at most {MAX_TAGS_ALL} (Flickr's limit)",
            "drop some tags or use tag_mode: any",
        )
    return ClassSpec(
        name=name, count=count, tags=tags, tag_mode=cast(Literal["any", "all"], tag_mode)
    )


def _class_name(check: _Checker, value: object, path: str) -> str:
    name = check.text(value, path, "text (the class's folder name)")
    valid = "use a plain folder name such as cat or sports_car"
    if not name:
        check.fail(path, "must not be empty", valid)
    for char in name:
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            check.fail(path, f"{name!r} contains the control character U+{ord(char):04X}", valid)
    if "/" in name or "\\" in name:
        check.fail(path, f"{name!r} contains '/' or '\\'", "a class is one folder; " + valid)
    if name in (".", ".."):
        check.fail(path, f"{name!r} is not a folder name", valid)
    if name.startswith("."):
        check.fail(path, f"{name!r} starts with '.' (a hidden folder)", valid)
    bad = sorted({char for char in name if char in ILLEGAL_NAME_CHARS})
    if bad:
        check.fail(
            path,
            f"{name!r} contains {' '.join(bad)}, not allowed in folder names on Windows",
            f"avoid {' '.join(ILLEGAL_NAME_CHARS)}",
        )
    if name != name.lstrip():
        check.fail(path, f"{name!r} starts with a space", valid)
    if name.endswith((" ", ".")) or name != name.rstrip():
        check.fail(path, f"{name!r} ends with a space or '.' (Windows drops them)", valid)
    if len(name) > MAX_NAME_CHARS:
        check.fail(path, f"is {len(name)} characters long", f"at most {MAX_NAME_CHARS} allowed")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        check.fail(
            path,
            f"is {len(name.encode('utf-8'))} bytes in UTF-8",
            f"filesystems allow at most {MAX_NAME_BYTES}; use a shorter name",
        )
    if name.split(".", 1)[0].lower() in WINDOWS_RESERVED_NAMES:
        check.fail(path, f"{name!r} is a reserved device name on Windows", valid)
    # Any case: a class "readme.md" or "attribution.md" clashes on macOS/Windows.
    if name.lower() in {n.lower() for n in OUTPUT_FILE_NAMES}:
        check.fail(path, f"{name!r} is the name of an output file asyncds writes", valid)
    if name.lower().startswith("preview-") and name.lower().endswith(".jpg"):
        check.fail(path, f"{name!r} is the name of a class preview asyncds writes", valid)
    return name


def _parse_tags(check: _Checker, value: object, path: str, name: str) -> tuple[str, ...]:
    valid = "give Flickr tags as a list, e.g. tags: [cat, kitten, -dog], or 'cat,kitten,-dog'"
    if value is _MISSING:
        # The name is the tag; Flickr would read a comma or a leading '-' as tag syntax.
        if "," in name or name.startswith("-"):
            check.fail(
                path,
                f"missing, and the class name {name!r} cannot double as a tag",
                f"add tags to this class; {valid}",
            )
        return (name,)
    items: list[tuple[str, object]]
    if isinstance(value, str):
        # The comma-separated form Flickr itself takes.
        items = [(path, part) for part in value.split(",")]
    elif isinstance(value, list):
        items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
        for where, item in items:
            if isinstance(item, str) and "," in item:
                check.fail(
                    where,
                    f"{item!r} contains a comma",
                    "write each tag as its own list item",
                )
    else:
        check.fail(path, f"must be a list of tags; got {_show(value)}", valid)
    if not items:
        check.fail(path, "is empty", f"leave it out to search for {name!r}, or {valid}")
    tags: list[str] = []
    seen: set[str] = set()
    for where, item in items:
        tag = check.text(item, where, "a tag (text)").strip()
        if not tag:
            problem = f"{value!r} has an empty tag" if isinstance(value, str) else "is empty"
            check.fail(where, problem, valid)
        if tag == "-":
            check.fail(where, "'-' has no tag after it to exclude", valid)
        if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in tag):
            check.fail(where, f"{tag!r} contains a control character", valid)
        # Flickr tags are case-insensitive; a repeated tag changes nothing, so drop it.
        if tag.casefold() not in seen:
            seen.add(tag.casefold())
            tags.append(tag)
    positive = {t.casefold() for t in tags if not t.startswith("-")}
    if not positive:
        check.fail(path, "only excludes tags ('-tag')", "add at least one tag to search for")
    contradiction = next(
        (t for t in tags if t.startswith("-") and t[1:].casefold() in positive), None
    )
    if contradiction:
        check.fail(
            path,
            f"both includes and excludes {contradiction[1:]!r}",
            "keep one of the two",
        )
    return tuple(tags)


def _parse_split(check: _Checker, value: object, classes: tuple[ClassSpec, ...]) -> SplitSpec:
    # The whole section is optional: the default is absolute, 500 images per class.
    section = check.mapping(value, "train_test_split", SPLIT_KEYS)
    seed = check.integer(section.get("seed", 42), "train_test_split.seed")
    kind = check.choice(
        section.get("type", "absolute"), "train_test_split.type", ("absolute", "proportional")
    )
    path = "train_test_split.test_size"
    if kind == "absolute":
        size_value = section.get("test_size", 500)
        if isinstance(size_value, float) and not isinstance(size_value, bool):
            check.fail(
                path,
                "must be a whole number >= 0 (images per class) for type absolute",
                f"got {_show(size_value)}; for a share of each class use type: proportional",
            )
        size: float = check.integer(size_value, path, lo=0)
        default_note = "" if "test_size" in section else " (the default)"
        for index, spec in enumerate(classes):
            if spec.count <= size:
                check.fail(
                    path,
                    f"{size}{default_note} is not smaller than classes[{index}] ({spec.name}) "
                    f"count {spec.count}",
                    "lower test_size or raise the count",
                )
    else:
        valid = "a fraction between 0 and 1 (e.g. 0.2) or a percent from 1 to under 100 (e.g. 20)"
        if "test_size" not in section:
            check.fail(path, "missing for type proportional", f"give {valid}")
        raw = section["test_size"]
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            check.fail(path, f"must be {valid}", f"got {_show(raw)}")
        if not (0 < raw < 100 and _finite(raw)):
            check.fail(path, f"must be {valid}", f"got {_show(raw)}")
        size = raw
    return SplitSpec(
        seed=seed, type=cast(Literal["absolute", "proportional"], kind), test_size=size
    )


def _parse_output_dir(check: _Checker, value: object) -> Path:
    if value is _MISSING:
        return Path("outputs")
    text = check.text(value, "output_dir", "a folder path (text)")
    if not text.strip():
        check.fail("output_dir", "must not be empty", "give a folder path, e.g. outputs")
    if "\0" in text:
        check.fail("output_dir", "contains a NUL character", "give a folder path, e.g. outputs")
    # Relative paths stay relative (to the working directory); only "~" is expanded.
    return Path(text).expanduser()


def _parse_subset(check: _Checker, value: object) -> SubsetSpec | None:
    if value is None:
        return None
    section = check.mapping(value, "subset", SUBSET_KEYS)
    if "percentage" not in section:
        check.fail("subset.percentage", "missing", "give a percent in (0, 100], e.g. 10")
    percentage = check.number(section["percentage"], "subset.percentage", gt=0)
    if percentage > 100:
        check.fail("subset.percentage", "must be a percent in (0, 100]", f"got {_show(percentage)}")
    seed = check.integer(section.get("seed", 42), "subset.seed")
    return SubsetSpec(percentage=percentage, seed=seed)


def _parse_flickr(check: _Checker, value: object, environ: Mapping[str, str]) -> FlickrSettings:
    section = check.mapping(value, "flickr", FLICKR_KEYS)
    defaults = FlickrSettings()
    api_url = _url(check, section.get("api_url", defaults.api_url), "flickr.api_url")
    override = environ.get(API_URL_ENV, "").strip()
    if override:
        api_url = _url(check, override, f"{API_URL_ENV} (environment)")
    return FlickrSettings(
        api_url=api_url,
        per_page=check.integer(
            section.get("per_page", defaults.per_page), "flickr.per_page", 1, 500
        ),
        calls_per_hour=check.integer(
            section.get("calls_per_hour", defaults.calls_per_hour), "flickr.calls_per_hour", lo=1
        ),
        license=_licenses(check, section.get("license", [])),
        sort=check.choice(section.get("sort", defaults.sort), "flickr.sort", FLICKR_SORTS),
        safe_search=check.integer(
            section.get("safe_search", defaults.safe_search), "flickr.safe_search", 1, 3
        ),
        media=check.choice(section.get("media", defaults.media), "flickr.media", FLICKR_MEDIA),
        retries=check.integer(section.get("retries", defaults.retries), "flickr.retries", 0, 20),
        backoff_s=check.number(
            section.get("backoff_s", defaults.backoff_s), "flickr.backoff_s", gt=0
        ),
    )


def _url(check: _Checker, value: object, path: str) -> str:
    valid = f"give an http(s) URL such as {DEFAULT_API_URL}"
    text = check.text(value, path, "a URL (text)").strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in text):
        check.fail(path, f"{text!r} is not an http(s) URL", valid)
    return text


def _licenses(check: _Checker, value: object) -> tuple[int, ...]:
    """A preset name (``open``), one id, or a list of ids: the ids to search for, () for any."""
    path = "flickr.license"
    presets = ", ".join(LICENSE_PRESETS)
    valid = "e.g. license: open, or license: [4, 5, 9, 10]; [] or any = any license"
    if value is None:
        return ()
    if isinstance(value, str):
        name = value.strip().lower()
        if name not in LICENSE_PRESETS:
            close = difflib.get_close_matches(name, list(LICENSE_PRESETS), n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            check.fail(
                path,
                f"must be a preset ({presets}) or a list of license ids 0..{MAX_LICENSE_ID};"
                f" got {_show(value)}",
                hint + valid,
            )
        return LICENSE_PRESETS[name]
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, list):
        check.fail(
            path,
            f"must be a preset ({presets}) or a list of license ids 0..{MAX_LICENSE_ID};"
            f" got {_show(value)}",
            valid,
        )
    ids: list[int] = []
    for index, item in enumerate(items):
        if isinstance(item, str) and item.strip().lower() in LICENSE_PRESETS:
            check.fail(
                f"{path}[{index}]",
                f"must be a license id 0..{MAX_LICENSE_ID}; got {_show(item)}",
                f"a preset stands alone: license: {item.strip().lower()}",
            )
        license_id = check.integer(item, f"{path}[{index}]", 0, MAX_LICENSE_ID)
        if license_id not in ids:
            ids.append(license_id)
    return tuple(ids)


def _parse_image(check: _Checker, value: object) -> ImageSettings:
    section = check.mapping(value, "image", IMAGE_KEYS)
    defaults = ImageSettings()
    max_side = check.integer(section.get("max_side", defaults.max_side), "image.max_side", 16, 4096)
    if "min_side" in section:
        min_side = check.integer(section["min_side"], "image.min_side", lo=1)
        if min_side > max_side:
            check.fail(
                "image.min_side",
                f"{min_side} is larger than image.max_side {max_side}",
                "lower min_side or raise max_side",
            )
    else:
        # A small max_side alone should not trip over the default min_side.
        min_side = min(defaults.min_side, max_side)
    return ImageSettings(
        max_side=max_side,
        quality=check.integer(section.get("quality", defaults.quality), "image.quality", 1, 95),
        min_side=min_side,
        max_pixels=check.integer(
            section.get("max_pixels", defaults.max_pixels), "image.max_pixels", lo=1
        ),
    )


def _parse_download(check: _Checker, value: object) -> DownloadSettings:
    section = check.mapping(value, "download", DOWNLOAD_KEYS)
    defaults = DownloadSettings()
    return DownloadSettings(
        concurrency=check.integer(
            section.get("concurrency", defaults.concurrency), "download.concurrency", 1, 1024
        ),
        timeout_s=check.number(
            section.get("timeout_s", defaults.timeout_s), "download.timeout_s", gt=0
        ),
        max_bytes=check.integer(
            section.get("max_bytes", defaults.max_bytes), "download.max_bytes", lo=1
        ),
        queue_size=check.integer(
            section.get("queue_size", defaults.queue_size), "download.queue_size", lo=1
        ),
        outage_s=check.number(
            section.get("outage_s", defaults.outage_s), "download.outage_s", gt=0
        ),
        idle_timeout_s=check.number(
            section.get("idle_timeout_s", defaults.idle_timeout_s), "download.idle_timeout_s", gt=0
        ),
    )


def _parse_dedup(check: _Checker, value: object) -> DedupSettings:
    section = check.mapping(value, "dedup", DEDUP_KEYS)
    defaults = DedupSettings()
    cross_class = check.choice(
        section.get("cross_class", defaults.cross_class),
        "dedup.cross_class",
        ("drop", "keep-first"),
    )
    return DedupSettings(
        cross_class=cast(Literal["drop", "keep-first"], cross_class),
        phash_distance=check.integer(
            section.get("phash_distance", defaults.phash_distance), "dedup.phash_distance", 0, 8
        ),
    )
