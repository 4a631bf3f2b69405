"""asyncds.dedup (pure planning, multi-index hashing) and apply_dedup on a real state."""

from __future__ import annotations

import dataclasses
import io
import random
from collections.abc import Iterable
from pathlib import Path

import pytest
from PIL import Image

from asyncds.config import ClassSpec, Config, DedupSettings
from asyncds.dedup import (
    Decision,
    SeenIndex,
    _Entry,
    apply_decisions,
    apply_dedup,
    copy_suspects,
    delete_dropped_files,
    kept_rows,
    plan_dedup,
)
from asyncds.files import image_relpath
from asyncds.state import CandidateRow, StateStore, Status
from tests import factories
from tests.factories import candidate

BASE = 0x8F3C_51A2_0E77_D419


def flip(h: int, *bits: int) -> int:
    """``h`` with the given bit positions inverted: a hash at a known Hamming distance."""
    for b in bits:
        h ^= 1 << b
    return h


def row(
    label: str,
    pid: str,
    seq: int,
    *,
    sha: str | None = None,
    phash: int | None = None,
    status: str = Status.OK,
) -> CandidateRow:
    return CandidateRow(
        label=label,
        photo_id=pid,
        seq=seq,
        url=f"http://127.0.0.1/{pid}_m.jpg",
        width=240,
        height=180,
        owner="1@N01",
        ownername="Jane",
        title=pid,
        license=4,
        date_upload=0,
        status=status,
        sha256=sha if sha is not None else f"sha-{label}-{pid}",
        # distinct far-apart hashes unless a test says otherwise
        phash=f"{random.Random(label + pid).getrandbits(64) if phash is None else phash:016x}",
        path=image_relpath(label, pid),
    )


def plan(rows: Iterable[CandidateRow], policy: str = "drop", distance: int = 4) -> list[Decision]:
    return plan_dedup(
        list(rows), class_order=["cat", "dog", "fox"], max_distance=distance, cross_class=policy
    )


def by_key(decisions: Iterable[Decision]) -> dict[tuple[str, str], Decision]:
    return {(d.label, d.photo_id): d for d in decisions}


# -- SeenIndex: near-duplicate lookup ---------------------------------------------------------


def brute_first(stored: list[int], h: int, d: int) -> int | None:
    return next((i for i, s in enumerate(stored) if (s ^ h).bit_count() <= d), None)


@pytest.mark.parametrize("max_distance", [0, 1, 3, 4, 6, 10])
def test_near_lookup_agrees_with_brute_force(max_distance: int):
    rng = random.Random(max_distance)
    bases = [rng.getrandbits(64) for _ in range(150)]
    # near neighbours at every distance around the threshold, in random order; the top bit
    # set and clear alike (SQLite stores them as signed integers)
    stored = [flip(b, *rng.sample(range(64), rng.randint(0, 12))) for b in bases for _ in range(4)]
    stored += [0, 2**64 - 1, 2**63, 2**63 - 1]
    rng.shuffle(stored)
    with SeenIndex(max_distance) as index:
        for i, h in enumerate(stored):
            index.add_hash(i, h)
        queries = [
            flip(b, *rng.sample(range(64), rng.randint(0, 12))) for b in bases for _ in range(4)
        ]
        for q in queries + stored[:100] + [1, 2**64 - 2, 2**63 + 1]:
            expected = brute_first(stored, q, max_distance)
            hit = index.find_hash(q)
            if expected is None:
                assert hit is None
            else:
                assert hit == (expected, (stored[expected] ^ q).bit_count())


def test_near_lookup_rejects_impossible_distances():
    with pytest.raises(ValueError):
        SeenIndex(64)
    with pytest.raises(ValueError):
        SeenIndex(-1)


def test_the_index_keeps_the_earliest_entry_of_each_photo_and_image():
    with SeenIndex(4) as index:
        first = index.add(_Entry("cat", "1", "", dropped=False), sha256="s", phash=BASE)
        index.add(_Entry("dog", "1", "", dropped=False), sha256="s", phash=BASE)
        index.add(_Entry("fox", "2", "", dropped=True))  # not indexed: no image
        assert len(index) == 3
        assert index.by_photo("1") == first
        assert index.by_sha("s") == first
        assert index.near(flip(BASE, 5)) == (first, 1)
        first.dropped = first.ambiguous = True
        index.save(first)
        assert index.by_photo("1") == first
        assert index.by_photo("3") is None
        assert index.by_sha("t") is None


# -- plan_dedup: within a class -----------------------------------------------------------------


def test_exact_duplicate_within_a_class_keeps_the_first_found():
    rows = [row("cat", "1", 1, sha="s"), row("cat", "2", 2, sha="s"), row("cat", "3", 3, sha="s")]
    decisions = by_key(plan(rows))
    assert set(decisions) == {("cat", "2"), ("cat", "3")}
    assert decisions["cat", "2"].status == Status.DUPLICATE
    assert decisions["cat", "2"].reason == "same image as cat/1.jpg"
    assert [r.photo_id for r in kept_rows(rows, decisions.values())] == ["1"]


def test_near_duplicates_within_the_distance_are_dropped():
    rows = [
        row("cat", "1", 1, phash=BASE),
        row("cat", "2", 2, phash=flip(BASE, 0, 17, 63)),  # distance 3
        row("cat", "3", 3, phash=flip(BASE, 1, 2, 3, 4)),  # distance 4: the limit
        row("cat", "4", 4, phash=flip(BASE, 5, 6, 7, 8, 9)),  # distance 5 from 1, 9 from 3
    ]
    decisions = by_key(plan(rows, distance=4))
    assert set(decisions) == {("cat", "2"), ("cat", "3")}
    assert decisions["cat", "2"] == Decision(
        "cat", "2", Status.NEAR_DUPLICATE, "near-duplicate (distance 3) of cat/1.jpg"
    )
    assert decisions["cat", "3"].reason == "near-duplicate (distance 4) of cat/1.jpg"
    assert by_key(plan(rows, distance=3)).keys() == {("cat", "2")}
    # distance 0 disables near-duplicate detection (exact copies are still caught by sha256)
    assert plan(rows, distance=0) == []


def test_a_near_duplicate_is_compared_with_kept_images_only():
    # 2 is near 1 and dropped; 3 is near 2 but not near 1: nothing in the dataset is like it.
    rows = [
        row("cat", "1", 1, phash=BASE),
        row("cat", "2", 2, phash=flip(BASE, 0, 1, 2)),
        row("cat", "3", 3, phash=flip(BASE, 0, 1, 2, 3, 4, 5)),
    ]
    assert by_key(plan(rows, distance=3)).keys() == {("cat", "2")}


def test_exact_copy_takes_precedence_over_near_copy_in_the_reason():
    rows = [row("cat", "1", 1, sha="s", phash=BASE), row("cat", "2", 2, sha="s", phash=BASE)]
    (decision,) = plan(rows)
    assert (decision.status, decision.reason) == (Status.DUPLICATE, "same image as cat/1.jpg")


# -- plan_dedup: across classes -----------------------------------------------------------------


def test_same_photo_id_in_two_classes_drop_policy_drops_every_copy():
    rows = [row("cat", "7", 1), row("dog", "7", 2), row("fox", "7", 5), row("dog", "8", 1)]
    decisions = by_key(plan(rows, "drop"))
    assert set(decisions) == {("cat", "7"), ("dog", "7"), ("fox", "7")}
    assert {d.status for d in decisions.values()} == {Status.CROSS_CLASS}
    assert decisions["dog", "7"].reason == "photo also found under cat"
    assert decisions["cat", "7"].reason == "photo also found under dog"


def test_same_photo_id_in_two_classes_keep_first_keeps_the_earlier_found():
    # dog found it at rank 1, cat at rank 2: dog keeps it, although cat comes first in config
    rows = [row("cat", "7", 2), row("dog", "7", 1), row("fox", "7", 9)]
    decisions = by_key(plan(rows, "keep-first"))
    assert set(decisions) == {("cat", "7"), ("fox", "7")}
    assert decisions["cat", "7"] == Decision(
        "cat", "7", Status.CROSS_CLASS, "photo also found under dog"
    )


def test_equal_rank_in_two_classes_goes_to_the_class_listed_first():
    rows = [row("dog", "7", 3), row("cat", "7", 3)]
    assert [(d.label, d.photo_id) for d in plan(rows, "keep-first")] == [("dog", "7")]


def test_same_bytes_under_another_photo_id_across_classes():
    rows = [row("cat", "1", 1, sha="s"), row("dog", "2", 4, sha="s"), row("dog", "3", 5, sha="s")]
    drop = by_key(plan(rows, "drop"))
    assert set(drop) == {("cat", "1"), ("dog", "2"), ("dog", "3")}
    assert {d.status for d in drop.values()} == {Status.CROSS_CLASS}
    assert drop["dog", "2"].reason == "same image as cat/1.jpg"
    assert drop["cat", "1"].reason == "same image as dog/2.jpg"
    keep = by_key(plan(rows, "keep-first"))
    assert set(keep) == {("dog", "2"), ("dog", "3")}
    assert {d.status for d in keep.values()} == {Status.CROSS_CLASS}


def test_near_copy_across_classes_follows_the_cross_class_policy():
    rows = [row("cat", "1", 1, phash=BASE), row("dog", "2", 1, phash=flip(BASE, 9, 10))]
    drop = by_key(plan(rows, "drop"))
    assert set(drop) == {("cat", "1"), ("dog", "2")}
    assert drop["dog", "2"].reason == "near-duplicate (distance 2) of cat/1.jpg"
    keep = plan(rows, "keep-first")
    assert [(d.label, d.status) for d in keep] == [("dog", Status.CROSS_CLASS)]


def test_a_within_class_copy_of_an_ambiguous_image_is_dropped_as_cross_class():
    rows = [row("cat", "1", 1, sha="s"), row("dog", "2", 2, sha="s"), row("cat", "3", 3, sha="s")]
    decisions = by_key(plan(rows, "drop"))
    assert decisions["cat", "3"].status == Status.CROSS_CLASS
    assert "another class" in decisions["cat", "3"].reason


def test_only_ok_rows_of_configured_classes_take_part():
    rows = [
        row("cat", "1", 1, sha="s", status=Status.UNAVAILABLE),
        row("cat", "2", 2, sha="s"),
        row("owl", "3", 1, sha="s"),  # a class no longer configured
        row("cat", "4", 3, sha="s", status=Status.PENDING),
    ]
    assert plan(rows) == []


# -- plan_dedup: determinism and re-runs ----------------------------------------------------------


def random_rows(seed: int, n: int = 300) -> list[CandidateRow]:
    """Rows with many collisions of every kind, ranks 1..n per class."""
    rng = random.Random(seed)
    shas = [f"s{i}" for i in range(n // 3)]
    hashes = [rng.getrandbits(64) for _ in range(n // 4)]
    rows, seqs = [], {"cat": 0, "dog": 0, "fox": 0}
    used: set[tuple[str, str]] = set()
    while len(rows) < n:
        label = rng.choice(list(seqs))
        pid = str(rng.randrange(n * 2))
        if (label, pid) in used:
            continue
        used.add((label, pid))
        seqs[label] += 1
        near = flip(rng.choice(hashes), *rng.sample(range(64), rng.randint(0, 7)))
        rows.append(row(label, pid, seqs[label], sha=rng.choice(shas), phash=near))
    return rows


def sparse_rows(seed: int, n: int = 3000) -> list[CandidateRow]:
    """Mostly unique rows, plus copies of every kind among them: exact (same sha256), near
    (hashes 0-8 bits apart, around every threshold), the same photo id under another class,
    rows without a hash, earlier drops of each dedup status, and a cluster of 300 rows whose
    hashes are equal or one bit apart."""
    rng = random.Random(seed)
    labels = ["cat", "dog", "fox"]
    seqs = dict.fromkeys(labels, 0)
    rows: list[CandidateRow] = []

    def add(label: str, pid: str, **kw: object) -> None:
        seqs[label] += 1
        rows.append(row(label, pid, seqs[label], **kw))  # type: ignore[arg-type]

    for i in range(n):
        label = rng.choice(labels)
        pid = f"p{i}"
        kind = rng.random()
        earlier = rows[rng.randrange(len(rows))] if rows else None
        if earlier is None or not earlier.phash or kind > 0.06:
            add(label, pid, phash=rng.getrandbits(64), sha=f"u{i}")
        elif kind > 0.045:  # the same bytes
            add(label, pid, sha=earlier.sha256, phash=rng.getrandbits(64))
        elif kind > 0.03:  # a near copy, 0 to 8 bits away
            bits = rng.sample(range(64), rng.randint(0, 8))
            add(label, pid, sha=f"u{i}", phash=flip(int(earlier.phash, 16), *bits))
        elif kind > 0.02:  # the same photo under another class
            other = rng.choice([x for x in labels if x != earlier.label])
            if (other, earlier.photo_id) not in {(r.label, r.photo_id) for r in rows}:
                add(other, earlier.photo_id, sha=f"u{i}", phash=rng.getrandbits(64))
        elif kind > 0.01:  # an earlier drop, copying something or not
            status = rng.choice([Status.DUPLICATE, Status.NEAR_DUPLICATE, Status.CROSS_CLASS])
            add(label, pid, sha=earlier.sha256, phash=int(earlier.phash, 16), status=status)
        else:  # stored without a hash
            add(label, pid, sha=f"u{i}")
            rows[-1] = dataclasses.replace(rows[-1], phash="")
    blank = rng.getrandbits(64)  # many copies of one hash, as blank or flat images give
    for i in range(300):
        add(
            rng.choice(labels),
            f"b{i}",
            sha=f"b{i}",
            phash=flip(blank, *([i % 64] if i % 3 else [])),
        )
    return rows


@pytest.mark.parametrize("policy", ["drop", "keep-first"])
@pytest.mark.parametrize("distance", [0, 4, 8])
def test_planning_only_rows_that_share_something_gives_the_same_plan(policy: str, distance: int):
    # A list can be read twice, so the plan first narrows it to the rows sharing a photo id,
    # bytes or a near hash with another (dedup.copy_suspects); an iterator is planned whole.
    rows = sparse_rows(distance)
    ranked = sorted(rows, key=lambda r: r.seq)
    for given, is_ranked in ((rows, False), (ranked, True)):
        narrowed = plan_dedup(
            given,
            class_order=["cat", "dog", "fox"],
            max_distance=distance,
            cross_class=policy,
            ranked=is_ranked,
        )
        whole = plan_dedup(
            iter(given),
            class_order=["cat", "dog", "fox"],
            max_distance=distance,
            cross_class=policy,
            ranked=is_ranked,
        )
        assert narrowed == whole
    kinds = {d.status for d in whole}
    assert {Status.DUPLICATE, Status.CROSS_CLASS} <= kinds
    assert (Status.NEAR_DUPLICATE in kinds) == (distance > 0)
    suspects = copy_suspects(rows, distance)
    # Every decision is among the suspects, and the suspects are a small part of the rows.
    assert {hash((d.label, d.photo_id)) for d in whole} <= suspects
    assert len(suspects) < len(rows) // 5


@pytest.mark.parametrize("policy", ["drop", "keep-first"])
def test_plan_does_not_depend_on_the_input_order(policy: str):
    rows = random_rows(1)
    expected = plan(rows, policy)
    assert expected, "the fixture should produce collisions"
    for seed in range(5):
        shuffled = rows[:]
        random.Random(seed).shuffle(shuffled)
        assert plan(shuffled, policy) == expected


@pytest.mark.parametrize("policy", ["drop", "keep-first"])
def test_plan_is_idempotent_and_never_revives_a_drop(policy: str):
    rows = random_rows(2)
    after = apply_decisions(rows, plan(rows, policy))
    assert plan(after, policy) == []
    kept = {(r.label, r.photo_id) for r in kept_rows(rows, plan(rows, policy))}
    # the dataset holds no two copies of one sha256
    shas = [r.sha256 for r in after if (r.label, r.photo_id) in kept]
    assert len(shas) == len(set(shas))


@pytest.mark.parametrize("policy", ["drop", "keep-first"])
def test_planning_in_rounds_matches_planning_at_once(policy: str):
    # The job plans after each download round; later rounds bring later ranks only.
    rows = random_rows(3, n=400)
    at_once = by_key(plan(rows, policy))
    first = [r for r in rows if r.seq <= 60]
    first_plan = plan(first, policy)
    state = apply_decisions(first, first_plan) + [r for r in rows if r.seq > 60]
    in_rounds = by_key(first_plan) | by_key(plan(state, policy))
    assert in_rounds == at_once


@pytest.mark.parametrize("policy", ["drop", "keep-first"])
def test_planning_a_ranked_stream_matches_planning_the_rows(policy: str):
    # apply_dedup streams the state by rank (seq, then label): rows of one rank arrive in label
    # order, which is not the processing order when the classes are listed otherwise.
    rows = random_rows(4, n=400)
    first = [r for r in rows if r.seq <= 60]
    order = ["fox", "cat", "dog"]

    def planned(given: Iterable[CandidateRow], *, ranked: bool) -> list[Decision]:
        return plan_dedup(
            given, class_order=order, max_distance=4, cross_class=policy, ranked=ranked
        )

    state = [
        *apply_decisions(first, planned(first, ranked=False)),
        *(r for r in rows if r.seq > 60),
    ]
    expected = planned(state, ranked=False)
    assert expected, "the fixture should produce collisions"
    streamed = iter(sorted(state, key=lambda r: (r.seq, r.label, r.photo_id)))
    assert planned(streamed, ranked=True) == expected


@pytest.mark.parametrize("readable_twice", [True, False])
def test_a_ranked_stream_out_of_rank_order_is_an_error(readable_twice: bool):
    # Both ways a plan can go: two passes over a list, one pass over an iterator.
    rows = [row("cat", "1", 2), row("dog", "2", 1)]
    with pytest.raises(ValueError, match="rank 1"):
        plan_dedup(
            rows if readable_twice else iter(rows),
            class_order=["cat", "dog"],
            max_distance=4,
            cross_class="drop",
            ranked=True,
        )


def test_earlier_drops_still_claim_their_image():
    # Round 1 dropped cat/1 and dog/1 (same photo, drop policy); round 2 brings a third copy.
    rows = [
        row("cat", "1", 1, sha="s", status=Status.CROSS_CLASS),
        row("dog", "1", 1, sha="s", status=Status.CROSS_CLASS),
        row("fox", "9", 4, sha="s"),
        row("cat", "5", 2, sha="t", status=Status.DUPLICATE),
        row("cat", "6", 3, sha="t"),
    ]
    decisions = by_key(plan(rows, "drop"))
    assert set(decisions) == {("fox", "9")}
    assert decisions["fox", "9"].status == Status.CROSS_CLASS


def test_a_new_earlier_copy_drops_a_previously_kept_image_under_keep_first():
    # dog's rank-2 copy was downloaded in a later round than cat's rank-10 copy
    rows = [row("cat", "1", 10, sha="s"), row("dog", "2", 2, sha="s")]
    assert [(d.label, d.photo_id) for d in plan(rows, "keep-first")] == [("cat", "1")]


def test_unknown_policy_is_an_error():
    with pytest.raises(ValueError, match="cross_class"):
        plan([], "maybe")


# -- apply_dedup on a real state and real files ----------------------------------------------------


def jpeg(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), color).save(buf, "JPEG")
    return buf.getvalue()


async def store_images(
    state: StateStore, out: Path, label: str, images: list[tuple[str, bytes, int]]
) -> None:
    """Add a search page for ``label`` and record each (photo id, bytes, phash) as downloaded."""
    await state.add_page(
        label, [candidate(label, pid) for pid, _, _ in images], cursor="c", exhausted=False, total=9
    )
    (out / label).mkdir(parents=True, exist_ok=True)
    for pid, data, phash in images:
        factories.store_image(state, out, label, pid, data, phash)
    await state.flush()


def config(policy: str = "drop", distance: int = 4, count: int = 10) -> Config:
    return Config(
        classes=(ClassSpec("cat", count, ("cat",)), ClassSpec("dog", count, ("dog",))),
        dedup=DedupSettings(cross_class=policy, phash_distance=distance),  # type: ignore[arg-type]
    )


async def test_apply_dedup_records_drops_and_deletes_their_files(tmp_path: Path):
    out = tmp_path / "out"
    red, blue, green = jpeg((200, 0, 0)), jpeg((0, 0, 200)), jpeg((0, 150, 0))
    async with await StateStore.open(out / "s.sqlite") as state:
        await store_images(
            state,
            out,
            "cat",
            [("1", red, BASE), ("2", red, BASE), ("3", blue, flip(BASE, 1, 2, 3, 4, 5, 6, 7, 8))],
        )
        await store_images(state, out, "dog", [("3", blue, 0), ("4", green, flip(BASE, 0, 63))])
        good = await apply_dedup(state, config("drop"), out)

        statuses = {(r.label, r.photo_id): (r.status, r.reason) for r in await state.rows()}
        assert statuses["cat", "1"] == (
            Status.CROSS_CLASS,
            "near-duplicate (distance 2) of dog/4.jpg",
        )
        assert statuses["cat", "2"] == (Status.DUPLICATE, "same image as cat/1.jpg")
        assert statuses["cat", "3"][0] == Status.CROSS_CLASS  # photo 3 is under dog too
        assert statuses["dog", "3"][0] == Status.CROSS_CLASS
        assert statuses["dog", "4"][0] == Status.CROSS_CLASS
        assert good == {"cat": 0, "dog": 0}
        assert sorted(p.name for p in out.glob("*/*.jpg")) == []

        # a second pass changes nothing; new, later images are judged against the old drops
        assert await apply_dedup(state, config("drop"), out) == {"cat": 0, "dog": 0}
        await store_images(
            state, out, "cat", [("9", red, BASE), ("10", jpeg((9, 9, 9)), ~BASE & (2**64 - 1))]
        )
        good = await apply_dedup(state, config("drop"), out)
        assert good == {"cat": 1, "dog": 0}
        assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*.jpg")) == ["cat/10.jpg"]
        assert (await state.counts())["cat"][Status.CROSS_CLASS] == 3


async def test_apply_dedup_keep_first_keeps_one_copy(tmp_path: Path):
    out = tmp_path / "out"
    red = jpeg((200, 0, 0))
    async with await StateStore.open(out / "s.sqlite") as state:
        await store_images(state, out, "cat", [("1", jpeg((1, 2, 3)), 1), ("2", red, BASE)])
        await store_images(state, out, "dog", [("5", red, BASE)])
        good = await apply_dedup(state, config("keep-first"), out)
        assert good == {"cat": 1, "dog": 1}
        # dog/5 is rank 1, cat/2 rank 2: dog keeps the image
        assert not (out / "cat" / "2.jpg").exists()
        assert (out / "dog" / "5.jpg").exists()
        (cat2,) = await state.rows("cat", Status.CROSS_CLASS)
        assert (cat2.photo_id, cat2.reason) == ("2", "same image as dog/5.jpg")


def test_delete_dropped_files_stays_inside_the_output_folder(tmp_path: Path):
    out = tmp_path / "out"
    (out / "cat").mkdir(parents=True)
    outside = tmp_path / "precious.jpg"
    outside.write_bytes(b"keep me")
    top = out / "summary.json"
    top.write_text("{}")
    (out / "cat" / "1.jpg").write_bytes(b"x")
    rows = [
        dataclasses.replace(row("cat", "1", 1), status=Status.DUPLICATE),
        dataclasses.replace(row("cat", "x", 2), status=Status.DUPLICATE, path="../precious.jpg"),
        dataclasses.replace(row("cat", "y", 3), status=Status.DUPLICATE, path=str(outside)),
        dataclasses.replace(row("cat", "z", 4), status=Status.DUPLICATE, path="summary.json"),
        dataclasses.replace(row("cat", "w", 5), status=Status.OK, path="cat/1.jpg"),
    ]
    assert delete_dropped_files(out, rows) == 1
    assert not (out / "cat" / "1.jpg").exists()
    assert outside.read_bytes() == b"keep me"
    assert top.exists()
