"""Golden outputs of assembly: a fixed state gives these exact bytes, whatever the code's shape.

The digests were taken with the code before assembly became writers (``asyncds/assemble.py`` at
7f86dcb) and must not change unless an output format changes on purpose (then bump
``ASSEMBLY_VERSION`` and take them again, saying so). Images are fixed byte strings, not
encoder output, so the digests do not depend on the JPEG library. ``summary.json`` is left
out: it lists every drop reason, so a new status changes it by design (``test_assemble`` checks
its content).
"""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

from asyncds.config import ClassSpec, Config, DedupSettings, SplitSpec, SubsetSpec
from asyncds.files import image_relpath
from asyncds.state import Outcome, StateStore, Status
from tests import factories

CLASSES = (
    ClassSpec("cat", 4, ("cat", "kitten")),
    ClassSpec("sports car", 3, ("sports car",)),
    ClassSpec("owl", 3, ("owl",)),  # ends short
    ClassSpec("yeti", 2, ("yeti",)),  # no candidates at all
)
# label -> [(photo id, status)]; every ok row gets a file
PLAN: dict[str, list[tuple[str, Status]]] = {
    "cat": [
        ("10", Status.OK),
        ("9", Status.UNAVAILABLE),
        ("1001", Status.OK),
        ("12", Status.DUPLICATE),
        ("2", Status.OK),
        ("13", Status.NEAR_DUPLICATE),
        ("300", Status.OK),
        ("31", Status.OK),  # surplus
        ("32", Status.PENDING),
    ],
    "sports car": [
        ("7", Status.OK),
        ("70", Status.CROSS_CLASS),
        ("71", Status.OK),
        ("8", Status.OK),
    ],
    "owl": [("5", Status.OK), ("6", Status.TOO_SMALL), ("60", Status.HTTP_ERROR)],
}
CONFIG = Config(
    classes=CLASSES,
    split=SplitSpec(seed=5, type="absolute", test_size=1),
    subset=SubsetSpec(percentage=50, seed=1),
    dedup=DedupSettings(cross_class="keep-first", phash_distance=3),
    output_dir=Path("unused"),
)
GOLDEN = {
    "train_test_split.json": "7ec172e976b5a8650e121596ac3494bde778cd365b50b7d9cf26e298048e5846",
    "train_test_split_subset.json": (
        "5f8d19136b4c2721ff81352998c3c3be1b5a0a780e60e906d046977fcd66067f"
    ),
    "urls_data.json": "59228153173087dc7ad845e959c81efa7383266af58fb8726eec667c3399aa8e",
    "metadata.jsonl": "df0ecc611db0aa08a35bbb1cf745a8a7a4f5ac683fc1dc1932f28511135f26ff",
    # Was 65b472eb… until summary.txt gained its "images by license" block (ASSEMBLY_VERSION
    # 3); without that block the text is still exactly 7f86dcb's.
    "summary.txt": "45436042d83cd92a2f6aca163079554a768c3ff261f0fac3ce8afe7966c5fb93",
    "ATTRIBUTION.md": "89c872fd08306b1a564305accbcc5c85cee39f53263a800a7e0ae3a0cf1540f9",
}
ARCHIVE_MEMBERS = [
    "ATTRIBUTION.md",
    "README.md",  # the dataset card (added after the digests were taken; not a digest here)
    "cat",
    "cat/10.jpg",
    "cat/1001.jpg",
    "cat/2.jpg",
    "cat/300.jpg",
    "croissant.json",  # added after the digests were taken, like README.md
    "metadata.jsonl",
    "owl",
    "owl/5.jpg",
    # The contact sheets and the report: added after the digests were taken, like README.md.
    "preview-cat.jpg",
    "preview-owl.jpg",
    "preview-sports car.jpg",
    "report.html",
    "sports car",
    "sports car/7.jpg",
    "sports car/71.jpg",
    "sports car/8.jpg",
    "summary.json",
    "summary.txt",
    "train_test_split.json",
    "train_test_split_subset.json",
]


async def build_state(out: Path) -> StateStore:
    state = await StateStore.open(out / "asyncds-state.sqlite")
    for label, items in PLAN.items():
        candidates = [
            factories.candidate(
                label,
                pid,
                url=f"https://live.staticflickr.com/65535/{pid}_{label[:3]}_m.jpg",
                owner=f"{pid}@N0{len(label) % 10}",
                ownername=f'Ówner "{pid}"',
                title=f"Tïtle\t{pid} / {label}",
                license=int(pid) % 19,  # 17 and 18 are unknown licenses
            )
            for pid, _ in items
        ]
        await state.add_page(label, candidates, cursor="c", exhausted=label == "owl", total=9)
        (out / label).mkdir(parents=True, exist_ok=True)
        for pid, status in items:
            if status == Status.PENDING:
                continue
            if status != Status.OK:
                state.record(Outcome(label, pid, status, f"because {status}"))
                continue
            relpath = image_relpath(label, pid)
            data = f"image {relpath}".encode()
            (out / relpath).write_bytes(data)
            state.record(
                Outcome(
                    label,
                    pid,
                    Status.OK,
                    sha256=hashlib.sha256(data).hexdigest(),
                    phash=f"{int(pid):016x}",
                    path=relpath,
                    stored_width=200 + int(pid) % 40,
                    stored_height=150,
                )
            )
    await state.flush()
    return state


def digests(out: Path) -> tuple[dict[str, str], list[str]]:
    files = {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in GOLDEN}
    with tarfile.open(out / "dataset.tgz") as tar:
        return files, tar.getnames()


async def test_assembly_outputs_match_the_golden_bytes(tmp_path: Path):
    from asyncds.assembly import RunStats, assemble_outputs

    out = tmp_path / "out"
    state = await build_state(out)
    try:
        stats = RunStats(wall_time_s=2.0, api_calls=3, images_fetched=9)
        await assemble_outputs(state, CONFIG, out, stats)
    finally:
        await state.close()
    assert digests(out) == (GOLDEN, ARCHIVE_MEMBERS)
