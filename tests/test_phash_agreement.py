"""Dedup with the NEW perceptual hash decides as with the OLD one, but for listed, explained pairs.

The issue: "Show that dedup decisions on a mixed corpus (exact and near copies, rotations,
re-encodes; at least 1,000 images) match imagehash's, or explain each difference." OLD is
``imagehash.phash(hash_size=8)`` of the full decode of the stored JPEG; NEW is
``imaging.stored_phash`` (a reduced decode), which ``process_image`` returns. The corpus, 1,141
images from the emulator's photos, is built by ``benchmarks.bench_phash`` (its docstring says
what is in it; ``python -m benchmarks.bench_phash`` prints it, the distances, every difference
with the bits that moved, and the timings).

Why decisions can differ at all, and only where listed: both hashes put a bit per DCT
coefficient against the median of the 64, from slightly different 32x32 pixels. Where two
coefficients sit a hair either side of the median (within 0.01 standard deviations here) they
can swap sides, so bits move in pairs: 20 % of the images move 2-6 bits, every distance stays
even. The planner sees hashes only through "within ``phash_distance``", so its decisions differ
only through a pair of images within the threshold under one hash and not the other (a pair
that *straddles* it, e.g. OLD 4, NEW 6), and through the matches that pair leads to. Such pairs
are copies whose distance already sits on the threshold (mostly 1-3 % crops, typically 2-8 bits
from their original), and they go both ways: at the default 4, nine pairs come closer
and seven move apart, and NEW drops one row fewer than OLD under either policy. The lists below
pin every such pair and every decision it changes, so a change that adds a difference fails.

They are for the codecs of the project's environment (Pillow 13.0, libjpeg-turbo 3.2): another
JPEG decoder draws the same corpus but may move other bits; check the new pairs with the
benchmark before updating the lists.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from benchmarks import bench_phash as bench
from benchmarks.bench_phash import FAR_KINDS, MIN_BASE_DISTANCE, NEAR_KINDS, Corpus

pytestmark = pytest.mark.slow  # building and hashing the corpus takes 8-10 s on 2 CPUs

# Pairs within the threshold under one hash only: (OLD distance, NEW distance). Every pair is
# two copies of one base (or a base and its copy) whose distance sits on the threshold; in each,
# one or both images had coefficients next to the median swap sides (ranks 29-38 of 64, all
# within 0.007 sd of it): `python -m benchmarks.bench_phash` shows which, pair by pair.
STRADDLING: dict[int, dict[tuple[str, str], tuple[int, int]]] = {
    4: {
        ("cat/10217", "cat/10219"): (6, 4),  # base ~ its 3 % crop (mosaic)
        ("cat/10218", "cat/10219"): (6, 4),  # q75 re-encode ~ 3 % crop of the same base
        ("cat/10245", "cat/10247"): (6, 4),  # base ~ its 2 % crop (colour-shifted)
        ("cat/10247", "cat/10248"): (6, 4),  # 2 % crop ~ 1 % crop of the same base
        ("cat/10247", "dog/10246"): (6, 4),  # 2 % crop ~ 500-px source of the same base
        ("dog/10014", "dog/10015"): (4, 6),  # base ~ its 2 % crop (colour-shifted)
        ("dog/10015", "dog/10016"): (4, 6),  # 2 % crop ~ contrast -5 % of the same base
        ("dog/10286", "dog/10288"): (4, 6),  # base ~ its 1 % crop (mosaic)
        ("dog/10287", "dog/10288"): (4, 6),  # q75 re-encode ~ 1 % crop of the same base
        ("dog/10560", "dog/10563"): (6, 4),  # base ~ its 3 % crop
        ("dog/10562", "dog/10563"): (6, 4),  # contrast -5 % ~ 3 % crop of the same base
        ("dog/10733", "fox/10734"): (2, 6),  # 1 % crop ~ brightness +5 % (6 bits of it moved)
        ("dog/10848", "dog/10850"): (4, 6),  # 2 % crop ~ EXIF-rotated copy of the same base
        ("dog/10863", "dog/10864"): (6, 4),  # base ~ its 3 % crop (colour-shifted)
        ("dog/10864", "dog/10865"): (6, 4),  # 3 % crop ~ q75 re-encode of the same base
        ("fox/10258", "fox/10259"): (2, 6),  # base ~ its q75 re-encode (2 + 4 bits moved)
    },
    8: {
        ("cat/10604", "cat/10605"): (8, 10),  # base ~ its 3 % crop
        ("dog/10313", "fox/10312"): (10, 8),  # 2 % crop in another class ~ its base
    },
}

# The decisions those pairs change: row -> (status under OLD, status under NEW). A straddling
# pair flips whether its later row matches; under `drop` a cross-class match then also takes
# (or spares) the copies it is linked to, and which copy is kept can move along the search order.
DIFFERENCES: dict[tuple[int, str], dict[str, tuple[str, str]]] = {
    (4, "drop"): {
        "cat/10219": ("ok", "near_duplicate"),
        "cat/10247": ("ok", "cross_class"),
        "cat/10561": ("cross_class", "ok"),
        "dog/10015": ("near_duplicate", "ok"),
        "dog/10288": ("near_duplicate", "ok"),
        "dog/10560": ("cross_class", "near_duplicate"),
        "dog/10562": ("cross_class", "near_duplicate"),
        "dog/10847": ("ok", "near_duplicate"),
        "dog/10850": ("near_duplicate", "ok"),
        "dog/10863": ("ok", "near_duplicate"),
        "fox/10258": ("near_duplicate", "ok"),
    },
    (4, "keep-first"): {
        "cat/10219": ("ok", "near_duplicate"),
        "cat/10247": ("ok", "cross_class"),
        "dog/10015": ("near_duplicate", "ok"),
        "dog/10288": ("near_duplicate", "ok"),
        "dog/10560": ("cross_class", "near_duplicate"),
        "dog/10562": ("cross_class", "near_duplicate"),
        "dog/10733": ("cross_class", "ok"),
        "dog/10847": ("ok", "near_duplicate"),
        "dog/10850": ("near_duplicate", "ok"),
        "dog/10863": ("ok", "near_duplicate"),
        "fox/10258": ("near_duplicate", "ok"),
    },
    (8, "drop"): {
        "cat/10605": ("near_duplicate", "ok"),
        "dog/10313": ("ok", "cross_class"),
        "fox/10312": ("ok", "cross_class"),
    },
    (8, "keep-first"): {
        "cat/10605": ("near_duplicate", "ok"),
        "fox/10312": ("ok", "cross_class"),
    },
}


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return bench.build_corpus()


def test_the_corpus_is_large_mixed_and_its_bases_distinct(corpus: Corpus) -> None:
    items = corpus.items
    assert len(items) >= 1000
    assert len(corpus.by_name()) == len(items)  # one row per (class, photo id)
    kinds = Counter(item.kind for item in items)
    assert set(kinds) == {"base", *NEAR_KINDS, *FAR_KINDS}
    assert min(kinds.values()) >= 10, kinds
    assert set(Counter(item.style for item in items if item.kind == "base")) == {
        "crop",
        "mosaic",
        "colour",
    }
    by_name = corpus.by_name()
    copies = [item for item in items if item.kind != "base"]
    assert sum(item.label != by_name[item.base].label for item in copies) >= 100  # cross-class
    for item in copies:
        same_bytes = item.sha256 == by_name[item.base].sha256
        assert same_bytes == (item.kind in ("exact", "same_photo")), item.name
    # Bases are not copies of one another, under either hash (by construction; checked here).
    bases = [item for item in items if item.kind == "base"]
    old, new = bench.distances(bases)
    off_diagonal = ~np.eye(len(bases), dtype=bool)
    assert old[off_diagonal].min() >= MIN_BASE_DISTANCE
    assert new[off_diagonal].min() >= MIN_BASE_DISTANCE


def test_old_and_new_hashes_of_one_image_differ_by_a_few_bits_in_pairs(corpus: Corpus) -> None:
    """The median splits 32/32, so bits move in pairs; few images move at all."""
    moved = [(item.old ^ item.new).bit_count() for item in corpus.items]
    assert all(d % 2 == 0 for d in moved)
    assert sum(moved) / len(moved) < 0.6
    assert max(moved) <= 6
    assert moved.count(0) / len(moved) > 0.75


def test_copies_are_near_and_rotations_far_under_both_hashes(corpus: Corpus) -> None:
    """Apart from crops, every near copy is within 6 bits of its base under both hashes, no
    rotation or flip comes within the largest allowed distance (8), and no copy comes within
    it of another base: the differences below stay inside families of copies."""
    by_name = corpus.by_name()
    old, new = corpus.distances()
    index = {item.name: i for i, item in enumerate(corpus.items)}
    is_base = np.array([item.kind == "base" for item in corpus.items])
    for i, item in enumerate(corpus.items):
        others = is_base.copy()
        others[[i, index[item.base]]] = False
        assert np.minimum(old[i], new[i])[others].min() > 8, item.name
    for item in corpus.items:
        if item.kind == "base":
            continue
        base = by_name[item.base]
        d_old, d_new = (item.old ^ base.old).bit_count(), (item.new ^ base.new).bit_count()
        if item.kind in FAR_KINDS:
            assert min(d_old, d_new) > 20, (item.name, item.kind, d_old, d_new)
        elif not item.kind.startswith("crop_"):
            assert max(d_old, d_new) <= 6, (item.name, item.kind, d_old, d_new)


@pytest.mark.parametrize("threshold", bench.THRESHOLDS)
def test_only_the_listed_pairs_straddle_the_threshold(corpus: Corpus, threshold: int) -> None:
    found = bench.straddling_pairs(corpus, threshold)
    if found != STRADDLING[threshold]:
        new = {p: d for p, d in found.items() if STRADDLING[threshold].get(p) != d}
        gone = {p: d for p, d in STRADDLING[threshold].items() if found.get(p) != d}
        details = "\n".join(f"{p}: {d}: {bench.explain(p, corpus)}" for p, d in new.items())
        pytest.fail(f"unexplained straddling pairs:\n{details}\nno longer found: {gone}")


@pytest.mark.parametrize("policy", bench.POLICIES)
@pytest.mark.parametrize("threshold", bench.THRESHOLDS)
def test_dedup_decisions_agree_but_for_the_listed_pairs(
    corpus: Corpus, threshold: int, policy: str
) -> None:
    differences = bench.decision_differences(corpus, threshold, policy)
    assert {f"{label}/{pid}": d for (label, pid), d in differences.items()} == DIFFERENCES[
        threshold, policy
    ]
    # Each differs through a listed pair it is linked to by matches (possibly via other copies).
    linked = bench.explaining_pairs(corpus, threshold)
    for name in DIFFERENCES[threshold, policy]:
        assert linked[name], name
        assert set(linked[name]) <= set(STRADDLING[threshold]), name
    # Not a vacuous agreement: most copies are dropped, and the plans differ in few rows.
    old = bench.plan(corpus, new=False, threshold=threshold, policy=policy)
    new = bench.plan(corpus, new=True, threshold=threshold, policy=policy)
    assert min(len(old), len(new)) >= 500
    assert len(differences) <= 0.02 * len(corpus.items)


@pytest.mark.parametrize("threshold", [0, 2, 6])
def test_without_a_straddling_pair_no_decision_differs(corpus: Corpus, threshold: int) -> None:
    """The principle behind the lists, at the other distances the config allows (4 and 8 are
    pinned above; every hash has 32 bits set, so distances are even and 2k+1 acts as 2k): a
    decision changes only through a straddling pair linked to its row."""
    assert all(item.old.bit_count() == item.new.bit_count() == 32 for item in corpus.items)
    linked = bench.explaining_pairs(corpus, threshold)
    for policy in bench.POLICIES:
        for label, pid in bench.decision_differences(corpus, threshold, policy):
            assert linked[f"{label}/{pid}"], (threshold, policy, label, pid)
