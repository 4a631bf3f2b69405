"""The Flickr emulator: REST contract, catalog, images, every fault, CLI and a real client."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import imagehash
import numpy as np
import pytest
from PIL import Image, ImageOps

from asyncds.emulator import (
    EMULATOR_API_KEY,
    EMULATOR_API_SECRET,
    Catalog,
    EmulatorSettings,
    EmulatorStats,
    EmulatorThread,
    FaultProfile,
    RunningEmulator,
    build_app,
    running_emulator,
)
from asyncds.emulator.catalog import (
    C_SIZES_SINCE,
    SIZES,
    VIDEO_BASE,
    SearchQuery,
    dates_of,
    duplicate_target,
    is_duplicate_id,
    is_video_id,
    page_bounds,
    size_dims,
)
from asyncds.emulator.cli import main as cli_main
from asyncds.emulator.faults import (
    API_TRANSIENT_FAULTS,
    FIRST_ATTEMPT_ONLY,
    IMAGE_TRANSIENT_FAULTS,
    decide_persistent,
    mix64,
    mix64_array,
    photo_on_foreign_host,
    transient_fault,
    unit_array,
    unit_exact,
)
from asyncds.emulator.images import RenderSpec, encode
from asyncds.emulator.server import (
    FOREIGN_IMAGE_HOST,
    SlidingWindowLimiter,
    image_path,
    parse_date,
)
from asyncds.flickr import EXTRAS, MAX_ANSWER_BYTES

ALL_URLS = "url_sq,url_t,url_s,url_q,url_m,url_n,url_z,url_c,url_l,url_o"
SEARCH_EXTRAS = f"license,date_upload,owner_name,tags,{ALL_URLS}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def settings(**kw: Any) -> EmulatorSettings:
    faults = kw.pop("faults", None)
    base: dict[str, Any] = {"seed": 7, "default_tag_size": 600}
    base.update(kw)
    if faults is not None:
        base["faults"] = faults if isinstance(faults, FaultProfile) else FaultProfile(**faults)
    return EmulatorSettings(**base)


async def call(
    session: aiohttp.ClientSession, emu: RunningEmulator, method: str, **params: Any
) -> dict[str, Any]:
    """One REST call as plain JSON (GET)."""
    query = {"method": method, "api_key": EMULATOR_API_KEY, "format": "json", "nojsoncallback": 1}
    query.update(params)
    async with session.get(emu.api_url, params={k: str(v) for k, v in query.items()}) as r:
        assert r.status == 200
        return json.loads(await r.text())


async def search(
    session: aiohttp.ClientSession, emu: RunningEmulator, **params: Any
) -> dict[str, Any]:
    data = await call(session, emu, "flickr.photos.search", **params)
    assert data["stat"] == "ok", data
    return data["photos"]


async def get_bytes(
    session: aiohttp.ClientSession, url: str, **kw: Any
) -> tuple[int, bytes, aiohttp.ClientResponse]:
    async with session.get(url, **kw) as r:
        return r.status, await r.read(), r


def ids_of(photos: dict[str, Any]) -> list[str]:
    return [p["id"] for p in photos["photo"]]


# ---------------------------------------------------------------------------------------------
# REST contract


async def test_get_and_post_answer_alike(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings()) as emu:
        params = {
            "method": "flickr.photos.search",
            "api_key": EMULATOR_API_KEY,
            "tags": "cat",
            "per_page": "5",
            "format": "json",
            "nojsoncallback": "1",
        }
        async with session.get(emu.api_url, params=params) as r:
            got = await r.json()
            assert r.content_type == "application/json"
        async with session.post(emu.api_url, data=params) as r:
            posted = await r.json()
        async with session.post(emu.api_url.rstrip("/"), data=params) as r:
            no_slash = await r.json()
        assert got == posted == no_slash
        assert got["stat"] == "ok" and len(got["photos"]["photo"]) == 5
        assert emu.stats.api_methods["flickr.photos.search"] == 3


async def test_key_from_oauth_header_or_param(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings()) as emu:
        form = {"method": "flickr.test.echo", "format": "json", "nojsoncallback": "1"}
        header = (
            f'OAuth oauth_nonce="1", oauth_timestamp="2", oauth_version="1.0", '
            f'oauth_signature_method="HMAC-SHA1", oauth_consumer_key="{EMULATOR_API_KEY}", '
            f'oauth_signature="x%3D"'
        )
        async with session.post(emu.api_url, data=form, headers={"Authorization": header}) as r:
            assert (await r.json())["stat"] == "ok"
        async with session.post(
            emu.api_url, data={**form, "oauth_consumer_key": EMULATOR_API_KEY}
        ) as r:
            assert (await r.json())["stat"] == "ok"
        bad = header.replace(EMULATOR_API_KEY, "nope")
        async with session.post(emu.api_url, data=form, headers={"Authorization": bad}) as r:
            assert (await r.json())["code"] == 100
        assert set(emu.stats.api_calls) == {EMULATOR_API_KEY, "nope"}


async def test_wrong_or_missing_key_is_code_100_with_http_200(
    session: aiohttp.ClientSession,
) -> None:
    async with running_emulator(settings()) as emu:
        for key in ("wrong", ""):
            data = await call(session, emu, "flickr.photos.search", tags="cat", api_key=key)
            assert data == {
                "stat": "fail",
                "code": 100,
                "message": "Invalid API Key (Key not found)",
            }
        async with session.get(emu.api_url, params={"method": "flickr.test.echo"}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/xml; charset=utf-8"
            rsp = ET.fromstring(await r.text())
        assert rsp.attrib == {"stat": "fail"}
        err = rsp.find("err")
        assert err is not None and err.get("code") == "100" and "Invalid API Key" in err.get("msg")


async def test_error_codes_112_3_and_1(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings()) as emu:
        data = await call(session, emu, "flickr.photos.nope")
        assert (data["code"], data["message"]) == (112, 'Method "flickr.photos.nope" not found')
        assert (await call(session, emu, "flickr.photos.search"))["code"] == 3
        assert (await call(session, emu, "flickr.photos.search", tags="-cat"))["code"] == 3
        many = ",".join(f"t{i}" for i in range(21))
        assert (await call(session, emu, "flickr.photos.search", tags=many))["stat"] == "ok"
        data = await call(session, emu, "flickr.photos.search", tags=many, tag_mode="all")
        assert data["code"] == 1 and data["stat"] == "fail"


async def test_text_search_echo_and_unknown_format(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings(tag_sizes={"redfox": 77})) as emu:
        photos = await search(session, emu, text="Red Fox")
        assert int(photos["total"]) == 77
        echo = await call(session, emu, "flickr.test.echo", foo="bar")
        assert echo["foo"] == {"_content": "bar"} and "api_key" not in echo
        query = {"method": "flickr.test.echo", "api_key": EMULATOR_API_KEY, "format": "soap"}
        async with session.get(emu.api_url, params=query) as r:
            err = ET.fromstring(await r.text()).find("err")
        assert err is not None and err.get("code") == "111"


async def test_json_jsonp_and_xml_shapes(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings()) as emu:
        base = {
            "method": "flickr.photos.search",
            "api_key": EMULATOR_API_KEY,
            "tags": "cat",
            "per_page": "3",
        }
        async with session.get(emu.api_url, params={**base, "format": "json"}) as r:
            text = await r.text()
            assert r.content_type == "text/javascript"
        assert text.startswith("jsonFlickrApi(") and text.endswith(")")
        wrapped = json.loads(text[len("jsonFlickrApi(") : -1])
        assert wrapped["stat"] == "ok"
        params = {**base, "format": "json", "jsoncallback": "cb"}
        async with session.get(emu.api_url, params=params) as r:
            assert (await r.text()).startswith("cb({")
        for fmt in ({"format": "rest"}, {}):
            async with session.get(emu.api_url, params={**base, **fmt}) as r:
                assert r.headers["Content-Type"] == "text/xml; charset=utf-8"
                rsp = ET.fromstring(await r.text())
            assert rsp.get("stat") == "ok"
            photos = rsp.find("photos")
            assert photos is not None and photos.get("perpage") == "3"
            assert [p.get("id") for p in photos.findall("photo")] == [
                p["id"] for p in wrapped["photos"]["photo"]
            ]
        photos = wrapped["photos"]
        assert int(photos["total"]) == 600 and photos["pages"] == 200 and photos["page"] == 1
        photo = photos["photo"][0]
        assert set(photo) == {
            "id",
            "owner",
            "secret",
            "server",
            "farm",
            "title",
            "ispublic",
            "isfriend",
            "isfamily",
        }
        assert photo["id"].isdigit() and len(photo["id"]) == 11
        assert "@N0" in photo["owner"] and isinstance(photo["farm"], int)


async def test_licenses_get_info(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings()) as emu:
        data = await call(session, emu, "flickr.photos.licenses.getInfo")
        licenses = data["licenses"]["license"]
        ids = [lic["id"] for lic in licenses]
        assert all(isinstance(i, str) for i in ids)
        assert sorted(ids, key=int) == [str(i) for i in range(17)]
        assert ids != sorted(ids, key=int)  # Flickr does not sort them
        by_id = {int(lic["id"]): lic for lic in licenses}
        assert by_id[4]["name"] == "CC BY 2.0"
        assert by_id[4]["url"] == "https://creativecommons.org/licenses/by/2.0/"
        assert by_id[9]["name"] == "Public Domain Dedication (CC0)"
        assert by_id[16]["url"] == "https://creativecommons.org/licenses/by-nc-nd/4.0/"
        assert by_id[0]["name"] == "All Rights Reserved"


# ---------------------------------------------------------------------------------------------
# Search semantics


async def walk(
    session: aiohttp.ClientSession, emu: RunningEmulator, per_page: int = 500, **params: Any
) -> tuple[list[str], dict[str, Any]]:
    """Every id of pages 1..min(pages, 4000 / per_page), with duplicates, and the first page."""
    first = await search(session, emu, per_page=per_page, page=1, **params)
    ids = ids_of(first)
    last = min(first["pages"], 4000 // per_page)
    for page in range(2, last + 1):
        ids += ids_of(await search(session, emu, per_page=per_page, page=page, **params))
    return ids, first


async def test_tag_filters_any_all_and_exclusion(session: aiohttp.ClientSession) -> None:
    s = settings(tag_sizes={"cat": 900, "dog": 700}, shared_fraction=0.1)
    async with running_emulator(s) as emu:
        cat, _ = await walk(session, emu, tags="cat")
        dog, _ = await walk(session, emu, tags="dog")
        assert len(set(cat)) == 900 and len(set(dog)) == 700
        both = set(cat) & set(dog)
        assert both, "shared photos appear under both tags"
        union, first = await walk(session, emu, tags="cat,dog")
        assert set(union) == set(cat) | set(dog) and int(first["total"]) == len(set(union))
        inter, _ = await walk(session, emu, tags="Cat, DOG", tag_mode="all")
        assert set(inter) == both
        excl, _ = await walk(session, emu, tags="cat,-dog")
        assert set(excl) == set(cat) - set(dog)
        tagged = await search(session, emu, tags="dog", extras="tags", per_page=500)
        assert all(p["tags"].split()[0] == "dog" for p in tagged["photo"])


async def test_license_and_inclusive_date_window(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings(tag_sizes={"bird": 2000})) as emu:
        every, _ = await walk(session, emu, tags="bird", extras="license,date_upload")
        pages = await search(session, emu, tags="bird", per_page=500, extras="license,date_upload")
        assert len(every) == 2000
        licensed, _ = await walk(session, emu, tags="bird", license="4,9,11", extras="license")
        full = [
            p
            for page in range(1, 5)
            for p in (
                await search(session, emu, tags="bird", per_page=500, page=page, extras="license")
            )["photo"]
        ]
        expected = {p["id"] for p in full if p["license"] in ("4", "9", "11")}
        assert set(licensed) == expected and expected
        # Both bounds are inclusive.
        photo = pages["photo"][17]
        when = int(photo["dateupload"])
        window = await search(
            session, emu, tags="bird", min_upload_date=when, max_upload_date=when, per_page=500
        )
        assert photo["id"] in ids_of(window)
        after = await search(session, emu, tags="bird", min_upload_date=when + 1, per_page=500)
        before = await search(session, emu, tags="bird", max_upload_date=when - 1, per_page=500)
        same = int(window["total"])
        assert int(after["total"]) + int(before["total"]) + same == 2000
        mysql = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when))
        window2 = await search(
            session, emu, tags="bird", min_upload_date=mysql, max_upload_date=mysql
        )
        assert ids_of(window2) == ids_of(window)[:100]
        dated = await search(
            session, emu, tags="bird", extras="date_upload", min_upload_date=when, per_page=500
        )
        assert all(int(p["dateupload"]) >= when for p in dated["photo"])


async def test_sort_orders(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings()) as emu:

        async def dates(sort: str) -> list[int]:
            photos = await search(
                session, emu, tags="fox", sort=sort, per_page=500, extras="date_upload"
            )
            return [int(p["dateupload"]) for p in photos["photo"]]

        desc, asc = await dates("date-posted-desc"), await dates("date-posted-asc")
        assert desc == sorted(desc, reverse=True) and asc == sorted(asc)
        default = await search(session, emu, tags="fox", per_page=500)
        relevance = await search(session, emu, tags="fox", per_page=500, sort="relevance")
        again = await search(session, emu, tags="fox", per_page=500, sort="relevance")
        assert ids_of(relevance) == ids_of(again) != ids_of(default)
        assert len(set(ids_of(relevance))) == 500


async def test_per_page_is_clamped_to_500(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings(default_tag_size=1200)) as emu:
        photos = await search(session, emu, tags="sea", per_page=1000)
        assert photos["perpage"] == 500 and len(photos["photo"]) == 500
        assert photos["pages"] == 3
        assert (await search(session, emu, tags="sea"))["perpage"] == 100


async def test_the_4000_cap(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings(tag_sizes={"sunset": 4750})) as emu:
        first = await search(session, emu, tags="sunset", per_page=500)
        assert int(first["total"]) == 4750 and first["pages"] == 10  # uncapped
        seen: list[str] = []
        for page in range(1, 9):
            seen += ids_of(await search(session, emu, tags="sunset", per_page=500, page=page))
        assert len(seen) == len(set(seen)) == 4000
        last_inside = ids_of(await search(session, emu, tags="sunset", per_page=500, page=8))
        for page in (9, 10, 11, 50):  # past the cap, and past `pages`
            repeat = await search(session, emu, tags="sunset", per_page=500, page=page)
            assert ids_of(repeat) == last_inside
        # A per_page that does not divide 4000: the straddling page stops at the cap.
        p27 = await search(session, emu, tags="sunset", per_page=150, page=27)
        assert len(p27["photo"]) == 4000 - 26 * 150
    assert page_bounds(4750, 500, 9) == (3500, 4000)
    assert page_bounds(30, 100, 5) == (0, 30)
    assert page_bounds(0, 100, 1) == (0, 0)


async def test_walk_reaches_every_photo_despite_page_duplicates(
    session: aiohttp.ClientSession,
) -> None:
    s = settings(tag_sizes={"owl": 3999}, page_duplicate_rate=0.02)
    async with running_emulator(s) as emu:
        ids, first = await walk(session, emu, per_page=250, tags="owl")
        assert int(first["total"]) == 3999
        assert set(ids) == {str(i) for i in emu.catalog.tag_ids("owl")}
        assert len(ids) > len(set(ids)), "duplicates across pages were injected"
        assert emu.stats.faults["page_duplicate"] > 0
        again, _ = await walk(session, emu, per_page=250, tags="owl")
        assert again == ids  # deterministic


async def test_every_tag_works_and_catalogs_are_deterministic() -> None:
    a = Catalog(seed=3, default_tag_size=1234)
    b = Catalog(seed=3, default_tag_size=1234)
    c = Catalog(seed=4, default_tag_size=1234)
    for tag in ("cat", "zebra crossing", "ünïcode"):
        assert len(a.tag_ids(tag)) == 1234
        assert np.array_equal(a.tag_ids(tag), b.tag_ids(tag))
    assert not np.array_equal(a.tag_ids("cat"), c.tag_ids("cat"))
    assert np.array_equal(a.tag_ids("Zebra Crossing"), a.tag_ids("zebracrossing"))


def test_big_catalogs_build_windowed_searches_and_dates_are_clustered() -> None:
    # How fast these run is benchmarks/bench_budgets.py's business, not a test's.
    cat = Catalog(seed=11, default_tag_size=50_000)
    ids = cat.tag_ids("sky")
    assert len(ids) == 50_000 == len(np.unique(ids))
    big = Catalog(seed=11, tag_sizes={"sea": 20_000})
    sea = big.tag_ids("sea")
    dates_of_sea = dates_of(11, sea)
    for i in range(50):
        lo = 1_200_000_000 + i * 9_000_000
        hi = lo + 40_000_000
        found = big.search(SearchQuery(tags=("sea",), min_upload=lo, max_upload=hi))
        expected = sea[(dates_of_sea >= lo) & (dates_of_sea <= hi)]
        assert np.array_equal(np.sort(found), expected)  # exactly the window, inclusive
    dates = np.sort(np.array([cat.photo(int(i)).dateupload for i in ids[:5000]]))
    per_year = np.histogram(dates, bins=21)[0]
    assert per_year.max() > 3 * max(1, np.median(per_year))  # clustered, not uniform
    assert dates.min() >= 1104537600 and dates.max() <= 1767225599


def is_video(ids: np.ndarray) -> np.ndarray:
    return np.array([is_video_id(int(i)) for i in ids], dtype=bool)


def test_videos_are_extra_entries_that_leave_the_photos_unchanged() -> None:
    plain = Catalog(seed=5, default_tag_size=3000)
    with_videos = Catalog(seed=5, default_tag_size=3000, video=0.05)
    photos = plain.tag_ids("cat")
    videos = with_videos.tag_video_ids("cat")
    assert np.array_equal(with_videos.tag_ids("cat"), photos)
    assert 100 <= len(videos) <= 200 and is_video(videos).all()  # about 5 % of 3,000
    assert len(plain.tag_video_ids("cat")) == 0
    window = {"min_upload": 1_300_000_000, "max_upload": 1_700_000_000}
    for sort in ("date-posted-desc", "relevance", "interestingness-asc", "date-taken-desc"):
        query = {"tags": ("cat", "dog"), "sort": sort, **window}
        before = plain.search(SearchQuery(**query))  # as every seed answered before videos
        assert np.array_equal(with_videos.search(SearchQuery(**query, media="photos")), before)
        everything = with_videos.search(SearchQuery(**query))  # media=all, Flickr's default
        mixed_in = is_video(everything)
        assert mixed_in.any()
        assert np.array_equal(everything[~mixed_in], before)  # photos keep their order
        only = with_videos.search(SearchQuery(**query, media="videos"))
        assert np.array_equal(only, everything[mixed_in])
    video, beside = int(videos[0]), int(videos[0]) - VIDEO_BASE
    assert beside in photos  # uploaded beside one of the tag's photos, in the same second
    info, photo = with_videos.photo(video), with_videos.photo(beside)
    assert info is not None and photo is not None
    assert (info.media, photo.media) == ("video", "photo")
    assert info.dateupload == photo.dateupload and info.id != photo.id
    assert with_videos.tags_containing(video, ["cat", "zebra"]) == ["cat"]


def test_shared_photos_between_tags() -> None:
    cat = Catalog(seed=5, default_tag_size=6000, shared_fraction=0.01)
    shared = np.intersect1d(cat.tag_ids("cat"), cat.tag_ids("dog"))
    assert 20 <= len(shared) <= 60
    none = Catalog(seed=5, default_tag_size=6000, shared_fraction=0.0)
    assert len(np.intersect1d(none.tag_ids("cat"), none.tag_ids("dog"))) == 0


# ---------------------------------------------------------------------------------------------
# Sizes and images


async def test_url_sizes_absent_when_missing_and_served_at_their_size(
    session: aiohttp.ClientSession,
) -> None:
    async with running_emulator(settings(default_tag_size=3000)) as emu:
        photos = (await search(session, emu, tags="tree", per_page=500, extras=SEARCH_EXTRAS))[
            "photo"
        ]
        old = await search(
            session,
            emu,
            tags="tree",
            per_page=50,
            extras="url_c",
            max_upload_date=C_SIZES_SINCE - 1,
        )
        assert old["photo"] and all("url_c" not in p for p in old["photo"])
        has_o = [p for p in photos if "url_o" in p]
        assert 0 < len(has_o) < len(photos)
        assert any("url_m" not in p for p in photos)  # some originals are under 500 px
        for p in photos:
            info = emu.catalog.photo(int(p["id"]))
            for size in SIZES:
                if size.extra is None:
                    continue
                key = size.extra.removeprefix("url_")
                dims = size_dims(info, size.suffix)
                assert (size.extra in p) == (dims is not None)
                if dims:
                    assert (p[f"width_{key}"], p[f"height_{key}"]) == dims
                    assert p[size.extra].startswith(emu.base_url + "/")
        # Download every size of a few photos and check the pixels match the advertised size.
        for p in photos[:4]:
            for size in SIZES:
                if size.extra not in p:
                    continue
                key = size.extra.removeprefix("url_")
                status, body, resp = await get_bytes(session, p[size.extra])
                assert status == 200 and resp.content_type == "image/jpeg"
                img = Image.open(io.BytesIO(body))
                assert img.size == (p[f"width_{key}"], p[f"height_{key}"])
        small = photos[0]
        status, body, _ = await get_bytes(session, small["url_s"])
        img = Image.open(io.BytesIO(body))
        assert max(img.size) == 240 and img.mode == "RGB" and img.format == "JPEG"
        assert not img.info.get("progressive") and not img.info.get("progression")
        for p in photos[100:140]:  # time per image: benchmarks/bench_budgets.py
            assert (await get_bytes(session, p["url_s"]))[0] == 200


async def test_missing_size_and_bad_paths(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings()) as emu:
        photos = (await search(session, emu, tags="tree", per_page=500, extras="url_s"))["photo"]
        p = photos[0]
        wrong_secret = p["url_s"].replace(p["secret"], "0123456789")
        assert (await get_bytes(session, wrong_secret))[0] == 404
        assert (await get_bytes(session, emu.base_url + "/65535/123_abc.jpg"))[0] == 404
        no_o = next(x for x in photos if emu.catalog.photo(int(x["id"])).has_original is False)
        url = emu.base_url + f"/{no_o['server']}/{no_o['id']}_{no_o['secret']}_o.jpg"
        status, _, resp = await get_bytes(session, url, allow_redirects=False)
        assert status == 404  # the original has its own secret: a guess is not a photo
        info = emu.catalog.photo(int(no_o["id"]))
        url = emu.base_url + f"/{info.server}/{info.id}_{info.originalsecret}_o.jpg"
        status, _, resp = await get_bytes(session, url, allow_redirects=False)
        assert status == 302 and resp.headers["Location"].endswith("photo_unavailable.png")


def _phash(data: bytes) -> imagehash.ImageHash:
    return imagehash.phash(Image.open(io.BytesIO(data)))


def test_phash_distinct_across_ids() -> None:
    catalog = Catalog(seed=21, default_tag_size=3000)
    rng = random.Random(0)
    ids = [int(i) for i in rng.sample(list(catalog.tag_ids("x")), 150)]
    hashes = {}
    for pid in ids:
        info = catalog.photo(pid)
        spec = RenderSpec(
            21, info.visual_id, size_dims(info, "m") or (100, 100), (info.width, info.height)
        )
        hashes[pid] = _phash(encode(spec)[0])
    distances = [hashes[a] - hashes[b] for a, b in (rng.sample(ids, 2) for _ in range(300))]
    assert sum(d <= 10 for d in distances) <= 3, sorted(distances)[:10]


async def test_exact_and_near_duplicates(session: aiohttp.ClientSession) -> None:
    faults = FaultProfile(exact_duplicate=0.1, near_duplicate=0.1)
    async with running_emulator(settings(faults=faults, tag_sizes={"dup": 400})) as emu:
        ids = {int(i) for i in emu.catalog.tag_ids("dup")}
        dups = [i for i in ids if is_duplicate_id(i)]
        assert len(dups) > 20 and len(ids) == 400
        kinds = set()
        for dup in dups[:12]:
            target, kind = duplicate_target(dup)
            assert target in ids  # the copied photo is in the same catalog
            kinds.add(kind)
            a = (await get_bytes(session, emu.image_url(dup)))[1]
            b = (await get_bytes(session, emu.image_url(target)))[1]
            if kind == "exact_duplicate":
                assert a == b
            else:
                assert a != b and _phash(a) - _phash(b) <= 4
        assert kinds == {"exact_duplicate", "near_duplicate"}


# ---------------------------------------------------------------------------------------------
# Faults


def test_hash_primitives_agree() -> None:
    keys = np.array([0, 1, 2**40 + 7, 31200322328], dtype=np.int64)
    assert [int(x) for x in mix64_array(keys)] == [mix64(int(k)) for k in keys]
    arr = unit_array(9, "x", keys)
    assert [float(x) for x in arr] == [unit_exact(9, "x", int(k)) for k in keys]


def test_fault_profile_loading(tmp_path: Path) -> None:
    assert FaultProfile.none() == FaultProfile()
    on = FaultProfile.all_on()
    survivable = set(FaultProfile.rate_names()) - FaultProfile.NOT_IN_ALL_ON
    assert all(0 < getattr(on, n) <= 0.05 for n in survivable)
    assert sorted(FaultProfile.NOT_IN_ALL_ON) == ["api_endless"] and on.api_endless == 0
    assert on.api_latency_s and on.image_latency_s and on.stall_s <= 2
    p = FaultProfile.from_mapping({"image-404": 0.5, "api_429": 0.1, "retry_after_s": 0})
    assert (p.image_404, p.api_429, p.retry_after_s) == (0.5, 0.1, 0)
    with pytest.raises(ValueError, match="image_405"):
        FaultProfile.from_mapping({"image_405": 0.1})
    with pytest.raises(ValueError, match="cmyk"):
        FaultProfile(cmyk=1.5)
    path = tmp_path / "faults.yaml"
    path.write_text("api_fail_105: 0.2\nsmall: 0.01\n")
    assert FaultProfile.from_yaml(path) == FaultProfile(api_fail_105=0.2, small=0.01)
    path.write_text("bogus_fault: 1\n")
    with pytest.raises(ValueError, match="bogus_fault"):
        FaultProfile.from_yaml(path)


def test_transient_decisions_are_pure_and_clear() -> None:
    profile = FaultProfile(**{n: 0.3 for n in API_TRANSIENT_FAULTS})
    identities = [f"q{i}" for i in range(300)]
    first = [transient_fault(profile, 1, API_TRANSIENT_FAULTS, i, 0) for i in identities]
    assert first == [transient_fault(profile, 1, API_TRANSIENT_FAULTS, i, 0) for i in identities]
    assert first != [transient_fault(profile, 2, API_TRANSIENT_FAULTS, i, 0) for i in identities]
    assert set(first) == {None, *API_TRANSIENT_FAULTS}
    always = FaultProfile(**{n: 1.0 for n in IMAGE_TRANSIENT_FAULTS})
    for i in identities:
        assert transient_fault(always, 1, IMAGE_TRANSIENT_FAULTS, i, 1) is not None
        assert transient_fault(always, 1, IMAGE_TRANSIENT_FAULTS, i, 2) is None
    html = FaultProfile(image_html_200=1.0)
    for i in identities:
        assert transient_fault(html, 1, IMAGE_TRANSIENT_FAULTS, i, 0) == "image_html_200"
        assert transient_fault(html, 1, IMAGE_TRANSIENT_FAULTS, i, 1) is None


API_FAULT_CHECKS: dict[str, tuple[int, str]] = {
    "api_fail_105": (200, "105"),
    "api_fail_201": (200, "201"),
    "api_http_500": (500, ""),
    "api_http_502": (502, ""),
    "api_http_503": (503, ""),
    "api_429": (429, ""),
    "api_html_200": (200, "<html"),
    "api_truncated": (200, "truncated"),
}


@pytest.mark.parametrize("fault", list(API_FAULT_CHECKS))
async def test_each_api_fault_fires_then_clears(session: aiohttp.ClientSession, fault: str) -> None:
    status, marker = API_FAULT_CHECKS[fault]
    s = settings(faults={fault: 1.0, "retry_after_s": 3})
    async with running_emulator(s) as emu:
        params = {
            "method": "flickr.photos.search",
            "api_key": EMULATOR_API_KEY,
            "tags": "cat",
            "format": "json",
            "nojsoncallback": "1",
        }
        for _ in range(2):
            async with session.get(emu.api_url, params=params) as r:
                text = await r.text()
                assert r.status == status
                if fault == "api_429":
                    assert r.headers["Retry-After"] == "3"
                if marker == "truncated":
                    with pytest.raises(json.JSONDecodeError):
                        json.loads(text)
                    assert text.startswith('{"photos"')
                elif marker.isdigit():
                    assert json.loads(text)["code"] == int(marker)
                elif marker:
                    assert marker in text
        # Different auth/signature parameters are still the same request: third try succeeds.
        async with session.post(emu.api_url, data={**params, "oauth_nonce": "z"}) as r:
            assert r.status == 200 and (await r.json())["stat"] == "ok"
        assert emu.stats.faults[fault] == 2


IMAGE_FAULT_STATUS = {
    "image_http_500": 500,
    "image_http_502": 502,
    "image_http_503": 503,
    "image_429": 429,
    "image_html_200": 200,
}


@pytest.mark.parametrize("fault", list(IMAGE_FAULT_STATUS))
async def test_each_image_status_fault_fires_then_clears(
    session: aiohttp.ClientSession, fault: str
) -> None:
    # A page served as the image clears on the second try: asyncds makes two at most.
    fires = 1 if fault in FIRST_ATTEMPT_ONLY else 2
    async with running_emulator(settings(faults={fault: 1.0})) as emu:
        photo = (await search(session, emu, tags="cat", per_page=1, extras="url_s"))["photo"][0]
        for _ in range(fires):
            status, body, resp = await get_bytes(session, photo["url_s"])
            assert status == IMAGE_FAULT_STATUS[fault]
            assert resp.content_type == "text/html"
            if fault == "image_429":
                assert resp.headers["Retry-After"] == "1"
        status, body, resp = await get_bytes(session, photo["url_s"])
        assert status == 200 and resp.content_type == "image/jpeg" and body[:2] == b"\xff\xd8"
        assert emu.stats.faults[fault] == fires
        assert emu.stats.photo_ids_served[photo["id"]] == 1


async def test_a_photo_that_always_answers_with_a_page_never_clears(
    session: aiohttp.ClientSession,
) -> None:
    async with running_emulator(settings(faults={"image_html_200_always": 1.0})) as emu:
        photos = await search(session, emu, tags="cat", per_page=1, extras="url_s,url_t")
        photo = photos["photo"][0]
        for url in (photo["url_s"], photo["url_t"], photo["url_s"], photo["url_s"]):
            status, body, resp = await get_bytes(session, url)
            assert status == 200 and resp.content_type == "text/html"
        assert emu.stats.faults["image_html_200_always"] == 4
        assert emu.stats.images_served == 0


async def test_a_photo_that_always_stalls_never_clears(session: aiohttp.ClientSession) -> None:
    s = settings(faults={"image_stall_always": 1.0, "stall_s": 1.0})
    async with running_emulator(s) as emu:
        url = emu.image_url(int(emu.catalog.tag_ids("cat")[0]))
        for _ in range(3):  # the transient stall would clear on the third
            with pytest.raises(asyncio.TimeoutError):
                await get_bytes(session, url, timeout=aiohttp.ClientTimeout(sock_read=0.1))
        assert emu.stats.faults["image_stall_always"] == 3
        assert emu.stats.image_requests[url.removeprefix(emu.base_url)] == 3


async def test_foreign_host_fault_points_a_photos_urls_elsewhere(
    session: aiohttp.ClientSession,
) -> None:
    s = settings(faults={"image_foreign_host": 0.3})
    async with running_emulator(s) as emu:
        photos = await search(session, emu, tags="cat", per_page=60, extras="url_s,url_t")
        foreign = 0
        for p in photos["photo"]:
            info = emu.catalog.photo(int(p["id"]))
            assert info is not None
            moved = photo_on_foreign_host(s.faults, s.seed, int(p["id"]))
            base = f"http://{FOREIGN_IMAGE_HOST}" if moved else emu.base_url
            assert p["url_t"] == base + image_path(info, "t")  # same path, other host
            assert p["url_s"].startswith(base + "/")
            foreign += moved
        assert 0 < foreign < len(photos["photo"])
        assert emu.stats.faults["image_foreign_host"] == foreign
        assert emu.stats.total_image_requests == 0


async def test_truncated_image_body(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings(faults={"image_truncated": 1.0})) as emu:
        url = emu.image_url(int(emu.catalog.tag_ids("cat")[0]))
        async with session.get(url) as r:
            promised = int(r.headers["Content-Length"])
            with pytest.raises(aiohttp.ClientPayloadError):
                await r.read()
        assert promised > 0
        # A raw socket sees the short body and then the server closing the connection.
        host, port = emu.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        path = url.removeprefix(emu.base_url)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), 5)  # returns at EOF: the server closed
        writer.close()
        body = raw.split(b"\r\n\r\n", 1)[1]
        assert 0 < len(body) < promised
        status, full, _ = await get_bytes(session, url)  # third attempt: whole
        assert status == 200 and len(full) == promised


async def test_stall_is_bounded(session: aiohttp.ClientSession) -> None:
    s = settings(faults={"image_stall": 1.0, "stall_s": 0.4})
    async with running_emulator(s) as emu:
        url = emu.image_url(int(emu.catalog.tag_ids("cat")[0]))
        with pytest.raises(asyncio.TimeoutError):
            await get_bytes(session, url, timeout=aiohttp.ClientTimeout(sock_read=0.1))
        t = time.perf_counter()
        status, body, _ = await get_bytes(session, url)
        assert status == 200 and time.perf_counter() - t >= 0.35  # stalled, then finished
        assert Image.open(io.BytesIO(body)).size
        assert emu.stats.faults["image_stall"] == 2
        assert (await get_bytes(session, url))[0] == 200
        assert emu.stats.faults["image_stall"] == 2  # cleared: the third attempt did not stall


async def test_permanent_404_and_placeholder(session: aiohttp.ClientSession) -> None:
    s = settings(faults={"image_404": 0.3, "image_unavailable": 0.3})
    async with running_emulator(s) as emu:
        photos = (await search(session, emu, tags="cat", per_page=60, extras="url_s"))["photo"]
        outcomes: dict[str, set[int]] = {}
        for p in photos:
            for _ in range(3):
                status, _, resp = await get_bytes(session, p["url_s"], allow_redirects=False)
                outcomes.setdefault(p["id"], set()).add(status)
                if status == 302:
                    location = resp.headers["Location"]
                    assert location == emu.base_url + "/pw/images/en-us/photo_unavailable.png"
        assert all(len(v) == 1 for v in outcomes.values()), "permanent faults never change"
        seen = {next(iter(v)) for v in outcomes.values()}
        assert seen == {200, 302, 404}
        gone = next(p for p in photos if outcomes[p["id"]] == {302})
        status, body, resp = await get_bytes(session, gone["url_s"])
        assert status == 200 and resp.content_type == "image/png"
        assert str(resp.url).endswith("/photo_unavailable.png")
        assert Image.open(io.BytesIO(body)).size == (500, 374)


async def _served_image(
    session: aiohttp.ClientSession, emu: RunningEmulator, fault: str
) -> tuple[bytes, aiohttp.ClientResponse, dict[str, Any]]:
    photo = (await search(session, emu, tags="cat", per_page=1, extras="url_s"))["photo"][0]
    status, body, resp = await get_bytes(session, photo["url_s"])
    assert status == 200, fault
    return body, resp, photo


@pytest.mark.parametrize("fault", ["cmyk", "png_alpha", "progressive", "exif_rotated"])
async def test_format_variants_are_valid_images(session: aiohttp.ClientSession, fault: str) -> None:
    async with running_emulator(settings(faults={fault: 1.0})) as emu:
        body, resp, photo = await _served_image(session, emu, fault)
        img = Image.open(io.BytesIO(body))
        img.load()
        upright = (photo["width_s"], photo["height_s"])
        if fault == "cmyk":
            assert img.mode == "CMYK" and resp.content_type == "image/jpeg"
        elif fault == "png_alpha":
            assert img.format == "PNG" and img.mode == "RGBA"
            assert resp.content_type == "image/png"
            assert img.getchannel("A").getextrema()[0] < 255
        elif fault == "progressive":
            assert img.info.get("progressive") or img.info.get("progression")
        else:
            assert img.getexif()[0x0112] in (6, 8)
            assert img.size == upright[::-1]
            assert ImageOps.exif_transpose(img).size == upright
        if fault != "exif_rotated":
            assert img.size == upright


async def test_pixel_bomb_is_refused_by_pillow(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings(faults={"pixel_bomb": 1.0})) as emu:
        body, resp, _ = await _served_image(session, emu, "pixel_bomb")
        assert len(body) < 200_000 and resp.content_type == "image/png"
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = 50_000_000
        try:
            with pytest.raises(Image.DecompressionBombError):
                Image.open(io.BytesIO(body))
        finally:
            Image.MAX_IMAGE_PIXELS = old


async def test_small_originals(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings(faults={"small": 1.0})) as emu:
        photos = await search(session, emu, tags="cat", per_page=20, extras=ALL_URLS)
        for p in photos["photo"]:
            assert "url_s" not in p and "url_m" not in p
            assert max(p["width_o"], p["height_o"]) < 64
            status, body, _ = await get_bytes(session, p["url_t"])
            assert max(Image.open(io.BytesIO(body)).size) < 64


async def test_permanent_faults_are_properties_of_the_photo(
    session: aiohttp.ClientSession,
) -> None:
    """Two emulators with the same seed agree; another seed disagrees."""
    profile = FaultProfile(cmyk=0.2, png_alpha=0.2, image_404=0.2, exif_rotated=0.2)

    async def fingerprint(seed: int) -> list[tuple[int, str]]:
        async with running_emulator(settings(seed=seed, faults=profile)) as emu:
            photos = (await search(session, emu, tags="cat", per_page=40, extras="url_s"))["photo"]
            out = []
            for p in photos:
                status, body, _ = await get_bytes(session, p["url_s"])
                out.append((status, str(hash(body))))
            return out

    a, b, c = await fingerprint(1), await fingerprint(1), await fingerprint(2)
    assert a == b and a != c


async def test_same_seed_same_transient_decisions(session: aiohttp.ClientSession) -> None:
    profile = FaultProfile(
        api_http_503=0.2, api_fail_105=0.2, image_http_500=0.2, image_429=0.2, retry_after_s=0
    )

    async def trace(seed: int) -> list[int | str]:
        async with running_emulator(settings(seed=seed, faults=profile)) as emu:
            out: list[int | str] = []
            photos: list[dict[str, Any]] = []
            for page in range(1, 6):
                for _ in range(3):
                    data = await call_raw(session, emu, tags="cat", page=page, extras="url_s")
                    out.append(data if isinstance(data, int) else data.get("code", "ok"))
                    if isinstance(data, dict) and data["stat"] == "ok":
                        photos = data["photos"]["photo"]
            for p in photos[:30]:
                for _ in range(3):
                    out.append((await get_bytes(session, p["url_s"]))[0])
            return out

    a, b, c = await trace(5), await trace(5), await trace(6)
    assert a == b and a != c
    assert {503, 105} & set(a) and {500, 429} & set(a)


async def call_raw(
    session: aiohttp.ClientSession, emu: RunningEmulator, **params: Any
) -> dict[str, Any] | int:
    query = {
        "method": "flickr.photos.search",
        "api_key": EMULATOR_API_KEY,
        "format": "json",
        "nojsoncallback": "1",
        **{k: str(v) for k, v in params.items()},
    }
    async with session.get(emu.api_url, params=query) as r:
        return json.loads(await r.text()) if r.status == 200 else r.status


async def test_all_faults_on_a_client_with_retries_loses_nothing(
    session: aiohttp.ClientSession,
) -> None:
    s = settings(faults=FaultProfile.all_on().replace(retry_after_s=0, stall_s=0.05))
    async with running_emulator(s) as emu:
        got: list[str] = []
        for page in range(1, 4):
            for _attempt in range(6):
                async with session.get(
                    emu.api_url,
                    params={
                        "method": "flickr.photos.search",
                        "api_key": EMULATOR_API_KEY,
                        "tags": "cat",
                        "page": str(page),
                        "per_page": "200",
                        "format": "json",
                        "nojsoncallback": "1",
                    },
                ) as r:
                    try:
                        data = json.loads(await r.text()) if r.status == 200 else None
                    except json.JSONDecodeError:
                        data = None
                if data and data["stat"] == "ok":
                    got += ids_of(data["photos"])
                    break
            else:
                pytest.fail(f"page {page} never succeeded")
        assert len(set(got)) == 600


async def test_latency(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings(faults={"api_latency_s": 0.1})) as emu:
        t = time.perf_counter()
        await search(session, emu, tags="cat", per_page=1)
        assert time.perf_counter() - t >= 0.1
    async with running_emulator(settings(faults={"image_latency_s": 0.1})) as emu:
        url = emu.image_url(int(emu.catalog.tag_ids("cat")[0]), "t")
        t = time.perf_counter()
        assert (await get_bytes(session, url))[0] == 200
        assert time.perf_counter() - t >= 0.1


async def test_media_selects_photos_videos_or_both(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings(faults={"video": 0.05})) as emu:
        n_videos = len(emu.catalog.tag_video_ids("cat"))
        assert n_videos > 0
        extras = "media,url_t"
        everything = await search(session, emu, tags="cat", per_page=500, extras=extras)
        assert int(everything["total"]) == 600 + n_videos  # no media: Flickr's default, all
        photos = await search(session, emu, tags="cat", per_page=500, media="photos", extras=extras)
        assert int(photos["total"]) == 600
        assert {p["media"] for p in photos["photo"]} == {"photo"}
        videos = await search(session, emu, tags="cat", media="videos", extras=extras)
        assert int(videos["total"]) == n_videos
        assert {p["media"] for p in videos["photo"]} == {"video"}
        status, body, resp = await get_bytes(session, videos["photo"][0]["url_t"])
        assert status == 200 and resp.content_type == "image/jpeg"  # a video's still frame
    async with running_emulator(settings()) as no_videos:
        same = await search(session, no_videos, tags="cat", per_page=500, media="photos")
    assert ids_of(photos) == ids_of(same)


async def test_a_full_search_page_is_far_below_the_client_cap(
    session: aiohttp.ClientSession,
) -> None:
    # asyncds.flickr caps an answer at MAX_ANSWER_BYTES because real pages are this small.
    async with running_emulator(settings(default_tag_size=3000)) as emu:
        query = {
            "method": "flickr.photos.search",
            "api_key": EMULATOR_API_KEY,
            "tags": "cat",
            "per_page": "500",
            "extras": EXTRAS,
            "format": "json",
            "nojsoncallback": "1",
        }
        async with session.get(emu.api_url, params=query) as r:
            body = await r.read()
    assert len(json.loads(body)["photos"]["photo"]) == 500
    assert len(body) < 1024 * 1024 <= MAX_ANSWER_BYTES / 4


async def test_api_endless_streams_on_every_attempt(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings(faults={"api_endless": 1.0})) as emu:
        params = {
            "method": "flickr.photos.search",
            "api_key": EMULATOR_API_KEY,
            "tags": "cat",
            "format": "json",
            "nojsoncallback": "1",
        }
        for _ in range(3):  # persistent: a retry gets the same endless answer
            async with session.get(emu.api_url, params=params) as r:
                assert r.status == 200 and r.content_length is None
                assert r.content_type == "application/json"
                got = bytearray()
                async for chunk in r.content.iter_chunked(64 * 1024):
                    got += chunk
                    if len(got) > 2 * MAX_ANSWER_BYTES:
                        break  # far past any real answer, and still going
                assert len(got) > 2 * MAX_ANSWER_BYTES
                assert got.startswith(b'{"photos":{"page":1,"photo":[{"id":"')
                r.close()
        assert emu.stats.faults["api_endless"] == 3
        # Other methods alike; the emulator keeps serving once the client hung up.
        async with session.get(emu.api_url, params={**params, "method": "flickr.test.echo"}) as r:
            assert (await r.content.read(100)).startswith(b'{"photos"')
            r.close()
    keys = [f"q{i}" for i in range(400)]
    half = [decide_persistent(7, "api_endless", 0.5, k) for k in keys]
    assert half == [decide_persistent(7, "api_endless", 0.5, k) for k in keys]  # pure
    assert half != [decide_persistent(8, "api_endless", 0.5, k) for k in keys]
    assert 150 < sum(half) < 250


async def test_rate_limit_per_key(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings(faults={"rate_limit_per_hour": 5})) as emu:
        for page in range(5):
            assert (await call_raw(session, emu, tags="cat", page=page + 1))["stat"] == "ok"
        query = {"method": "flickr.test.echo", "api_key": EMULATOR_API_KEY}
        async with session.get(emu.api_url, params=query) as r:
            assert r.status == 429
            assert 3590 <= int(r.headers["Retry-After"]) <= 3600
        assert emu.stats.faults["rate_limit"] == 1
        assert emu.stats.max_calls_in_window(60, EMULATOR_API_KEY) == 6
    limiter = SlidingWindowLimiter(2, window=10)
    assert limiter.acquire("k", 0) is None and limiter.acquire("k", 1) is None
    assert limiter.acquire("k", 2) == 8 and limiter.acquire("other", 2) is None
    assert limiter.acquire("k", 10) is None  # the first call left the window


def test_max_calls_in_window() -> None:
    stats = EmulatorStats()
    stats.api_calls = {"a": [0.0, 1.0, 2.0, 30.0, 59.9, 60.0, 61.0], "b": [1.5, 100.0]}
    assert stats.max_calls_in_window(60, "a") == 5  # 1.0, 2.0, 30.0, 59.9, 60.0
    assert stats.max_calls_in_window(60) == 6
    assert stats.max_calls_in_window(1, "a") == 2  # 59.9 and 60.0
    assert stats.max_calls_in_window(0.05, "a") == 1
    assert stats.max_calls_in_window(60, "missing") == 0
    assert stats.total_api_calls == 9


async def test_stats_track_images(session: aiohttp.ClientSession) -> None:
    async with running_emulator(settings()) as emu:
        photos = (await search(session, emu, tags="cat", per_page=5, extras="url_s"))["photo"]
        for p in photos:
            await get_bytes(session, p["url_s"])
        await get_bytes(session, photos[0]["url_s"])
        assert emu.stats.total_image_requests == 6
        assert list(emu.stats.repeated_image_requests().values()) == [2]
        assert set(emu.stats.photo_ids_served) == {p["id"] for p in photos}
        assert emu.stats.photo_ids_returned == {p["id"] for p in photos}
        assert emu.stats.snapshot()["images_served"] == 6


def test_build_app_and_settings_validation() -> None:
    from aiohttp import web

    assert isinstance(build_app(EmulatorSettings()), web.Application)
    with pytest.raises(ValueError, match="page_duplicate_rate"):
        EmulatorSettings(page_duplicate_rate=2.0)
    assert parse_date("2012-03-01") == C_SIZES_SINCE
    assert parse_date("1330560000") == C_SIZES_SINCE
    assert parse_date("yesterday") is None


# ---------------------------------------------------------------------------------------------
# CLI


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "asyncds.emulator.cli", "--port", "0", "--seed", "3"]
        + ["--tag-size", "cat=42", "dog=7", "--image-404", "0.5"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 20
        api_url = ""
        while time.monotonic() < deadline and not api_url:
            line = proc.stderr.readline()
            if "FLICKR_API_URL=" in line:
                api_url = line.split("FLICKR_API_URL=")[1].split()[0]
                assert f"API_KEY={EMULATOR_API_KEY}" in line
        assert api_url.startswith("http://127.0.0.1:")
        query = "?method=flickr.photos.search&tags=cat&format=json&nojsoncallback=1"
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
        with direct.open(f"{api_url}{query}&api_key={EMULATOR_API_KEY}", timeout=10) as r:
            assert int(json.loads(r.read())["photos"]["total"]) == 42
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    bad = tmp_path / "faults.yaml"
    bad.write_text("not_a_fault: 0.1\n")
    assert cli_main(["--profile", str(bad)]) == 2
    assert cli_main(["--tag-size", "cat"]) == 2
    assert cli_main(["--cmyk", "3"]) == 2


# ---------------------------------------------------------------------------------------------
# The public flickrapi library (sync, OAuth-signed POSTs)


def test_flickrapi_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flickrapi = pytest.importorskip("flickrapi")
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)  # requests must talk to 127.0.0.1 directly
    with EmulatorThread(settings()) as emu:
        monkeypatch.setattr(flickrapi.FlickrAPI, "REST_URL", emu.api_url)
        api = flickrapi.FlickrAPI(
            EMULATOR_API_KEY,
            EMULATOR_API_SECRET,
            format="etree",
            store_token=False,
            token_cache_location=str(tmp_path),
        )
        rsp = api.photos.search(tags="cat", per_page=10, extras="url_s")
        photos = rsp.findall("photos/photo")
        assert len(photos) == 10 and all(
            p.get("url_s", "").startswith(emu.base_url) for p in photos
        )
        parsed = api.photos.search(tags="cat", per_page=10, extras="url_s", format="parsed-json")
        assert [p["id"] for p in parsed["photos"]["photo"]] == [p.get("id") for p in photos]
        licenses = api.photos.licenses.getInfo(format="parsed-json")
        assert len(licenses["licenses"]["license"]) == 17
        bad = flickrapi.FlickrAPI("wrong", "secret", format="parsed-json", store_token=False)
        with pytest.raises(flickrapi.exceptions.FlickrError) as err:
            bad.photos.search(tags="cat")
        assert err.value.code == 100
        assert emu.stats.api_calls[EMULATOR_API_KEY]  # the key came from the OAuth header
        assert not (tmp_path / ".flickr").exists()
