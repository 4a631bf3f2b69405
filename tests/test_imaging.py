"""asyncds.imaging: statuses, conversions, orientation, pass-through, hashes and the pool."""

from __future__ import annotations

import hashlib
import io
import itertools
import multiprocessing
import pickle
import random
import struct
import warnings
import zlib
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile, ImageOps, features

from asyncds import imaging
from asyncds.imaging import (
    CORRUPT,
    OK,
    TOO_MANY_PIXELS,
    TOO_SMALL,
    ImageOptions,
    ImageResult,
    hamming,
    phash_from_hex,
    phash_to_hex,
    process_batch,
    process_image,
)

PHOTOS = Path(imaging.__file__).parent / "emulator" / "photos"
OPTS = ImageOptions()


@cache
def photo(name: str) -> Image.Image:
    with Image.open(PHOTOS / f"{name}.jpg") as im:
        return im.convert("RGB")


def photo_names() -> list[str]:
    return sorted(p.stem for p in PHOTOS.glob("*.jpg"))


def encode(im: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def small_jpeg(name: str = "chelsea", **params: object) -> bytes:
    """A 240-px JPEG like Flickr's ``url_s`` (baseline, YCbCr) unless ``params`` say otherwise."""
    im = photo(name)
    return encode(im.resize(imaging._fit(*im.size, 240), Image.Resampling.LANCZOS), **params)


def exif_with_orientation(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def decoded(result: ImageResult) -> Image.Image:
    assert result.data is not None, result.reason
    im = Image.open(io.BytesIO(result.data))
    im.load()
    return im


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size
    return float(np.mean(np.abs(np.asarray(a, np.int16) - np.asarray(b.convert("RGB"), np.int16))))


def assert_stored_jpeg(result: ImageResult) -> Image.Image:
    """An ok result whose bytes are a baseline RGB JPEG matching its metadata."""
    assert result.status == OK, result.reason
    im = decoded(result)
    assert (im.format, im.mode, im.layers) == ("JPEG", "RGB", 3)
    assert imaging._jpeg_frame_marker(result.data) == 0xC0  # baseline
    assert im.size == (result.width, result.height)
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()
    return im


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width``x``height`` but carries one row of pixels: decoding it fails."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * min(width, 64)))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if any pixel data is decoded (the result then becomes ``corrupt``, not the status)."""

    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


# --- resize and pass-through ------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1024, 893), (683, 1024), (1024, 1024), (500, 333)])
def test_large_image_is_resized_to_max_side_keeping_aspect(size: tuple[int, int]) -> None:
    source = photo("hubble_deep_field").resize(size, Image.Resampling.LANCZOS)
    result = process_image(encode(source, quality=92), OPTS)

    im = assert_stored_jpeg(result)
    assert not result.passthrough
    assert max(im.size) == 240
    expected_short = min(size) * 240 / max(size)
    assert abs(min(im.size) - expected_short) <= 1
    assert (im.width >= im.height) == (size[0] >= size[1])
    # Against a full decode + LANCZOS: same picture, no shift from the draft box.
    reference = source.resize(im.size, Image.Resampling.LANCZOS)
    assert mean_abs_diff(im, reference) < 4


def test_baseline_240px_jpeg_passes_through_byte_identical() -> None:
    data = small_jpeg(quality=90)
    result = process_image(data, OPTS)

    assert result.status == OK and result.passthrough
    assert result.data == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert (result.width, result.height) == Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize(
    "params",
    [{"exif": exif_with_orientation(1)}, {"subsampling": 0, "qtables": "web_high"}],
    ids=["orientation-1", "4:4:4-custom-tables"],
)
def test_other_baseline_ycbcr_jpegs_pass_through(params: dict[str, object]) -> None:
    data = small_jpeg(**params)
    result = process_image(data, OPTS)
    assert result.passthrough and result.data == data


@pytest.mark.parametrize(
    "params",
    [
        {"progressive": True},
        {"keep_rgb": True},  # RGB-coded, not YCbCr
        {"exif": exif_with_orientation(6)},
    ],
    ids=["progressive", "rgb-coded", "orientation-6"],
)
def test_240px_jpeg_that_is_not_plain_baseline_ycbcr_is_reencoded(
    params: dict[str, object],
) -> None:
    data = small_jpeg(**params)
    result = process_image(data, OPTS)
    im = assert_stored_jpeg(result)
    assert not result.passthrough and result.data != data
    assert "progressive" not in im.info


def test_progressive_output_matches_its_source() -> None:
    data = small_jpeg(progressive=True, quality=95)
    im = assert_stored_jpeg(process_image(data, OPTS))
    assert mean_abs_diff(im, Image.open(io.BytesIO(data))) < 4  # one q90 re-encode away


def test_small_image_is_not_upscaled() -> None:
    source = photo("coffee").resize((100, 80))
    png = process_image(encode(source, "PNG"), OPTS)
    assert (png.width, png.height) == (100, 80) and not png.passthrough
    jpeg = process_image(encode(source), OPTS)
    assert (jpeg.width, jpeg.height) == (100, 80) and jpeg.passthrough


def test_reencoded_output_carries_no_metadata() -> None:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = photo("rocket")
    data = encode(source, exif=exif, icc_profile=icc, comment=b"secret")
    im = assert_stored_jpeg(process_image(data, OPTS))
    assert not {"exif", "icc_profile", "comment", "xmp"} & set(im.info)


# --- colour modes -----------------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (300, 200), (0, 255, 255, 0))  # red in CMYK
    result = process_image(encode(cmyk, quality=95), OPTS)
    im = assert_stored_jpeg(result)
    assert im.size == (240, 160)
    r, g, b = im.getpixel((120, 80))
    assert r > 230 and g < 25 and b < 25


def test_alpha_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (200, 100), (255, 0, 0, 0))  # transparent, hiding red
    rgba.paste((0, 0, 255, 255), (100, 0, 200, 100))  # opaque blue on the right
    rgba.paste((0, 0, 0, 128), (0, 50, 100, 100))  # half-transparent black bottom-left
    im = assert_stored_jpeg(process_image(encode(rgba, "PNG"), OPTS))

    assert all(c >= 245 for c in im.getpixel((50, 20)))  # white, not black or red
    r, g, b = im.getpixel((150, 50))
    assert r < 20 and g < 20 and b > 230
    assert all(115 <= c <= 140 for c in im.getpixel((50, 80)))  # grey: black over white


def test_grey_alpha_and_palette_transparency_are_composited_on_white() -> None:
    la = Image.new("LA", (100, 100), (0, 0))
    assert all(c >= 245 for c in decoded(process_image(encode(la, "PNG"), OPTS)).getpixel((50, 50)))

    pal = Image.new("P", (100, 100), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    data = encode(pal, "PNG", transparency=1)
    assert all(c >= 245 for c in decoded(process_image(data, OPTS)).getpixel((50, 50)))


def test_palette_gif_becomes_rgb() -> None:
    gif = photo("chelsea").quantize(64)
    im = assert_stored_jpeg(process_image(encode(gif, "GIF"), OPTS))
    assert im.size == (240, 160)
    assert mean_abs_diff(im, photo("chelsea").resize(im.size, Image.Resampling.LANCZOS)) < 12


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_grayscale_becomes_three_channel_rgb(fmt: str) -> None:
    grey = photo("astronaut").convert("L").resize((240, 240))
    result = process_image(encode(grey, fmt), OPTS)
    im = assert_stored_jpeg(result)
    assert not result.passthrough  # one-component JPEG: re-encoded as RGB
    assert mean_abs_diff(im, grey.convert("RGB")) < 3


def test_16_bit_grey_is_scaled_not_clipped() -> None:
    grey16 = Image.new("I;16", (100, 100), 32896)
    grey16.paste(65535, (50, 0, 100, 100))
    im = assert_stored_jpeg(process_image(encode(grey16, "PNG"), OPTS))
    assert abs(im.getpixel((20, 50))[0] - 128) <= 3
    assert im.getpixel((80, 50))[0] >= 250


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
@pytest.mark.parametrize("fmt", ["WEBP", "BMP"])
def test_other_web_formats_are_accepted(fmt: str) -> None:
    assert_stored_jpeg(process_image(encode(photo("coffee"), fmt), OPTS))


# --- orientation --------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_orientation_is_applied(orientation: int) -> None:
    raw = photo("rocket").resize((320, 200))
    raw.paste((255, 0, 0), (0, 0, 60, 60))  # a red mark in the stored top-left corner
    data = encode(raw, quality=95, exif=exif_with_orientation(orientation))

    result = process_image(data, OPTS)
    im = assert_stored_jpeg(result)
    swapped = orientation in (5, 6, 7, 8)
    assert im.size == ((150, 240) if swapped else (240, 150))
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    assert mean_abs_diff(im, upright.resize(im.size, Image.Resampling.LANCZOS)) < 3


@pytest.mark.parametrize(("orientation", "corner"), [(6, (145, 5)), (8, (5, 235))])
def test_orientation_6_and_8_put_the_top_left_corner_where_it_belongs(
    orientation: int, corner: tuple[int, int]
) -> None:
    raw = Image.new("RGB", (320, 200), (255, 255, 255))
    raw.paste((255, 0, 0), (0, 0, 40, 40))
    data = encode(raw, quality=95, exif=exif_with_orientation(orientation))
    im = decoded(process_image(data, OPTS))
    assert im.size == (150, 240)
    r, g, b = im.getpixel(corner)  # 6: rotated clockwise -> top-right; 8: -> bottom-left
    assert r > 200 and g < 60 and b < 60


# --- rejections ---------------------------------------------------------------------------------


def test_too_small() -> None:
    result = process_image(encode(photo("coffee").resize((50, 30))), OPTS)
    assert result == ImageResult(
        TOO_SMALL, "50x30 is smaller than min_side 64", None, 0, 0, "", 0, False
    )
    portrait = process_image(encode(photo("coffee").resize((30, 50)), "PNG"), OPTS)
    assert portrait.status == TOO_SMALL
    assert process_image(encode(photo("coffee").resize((64, 40))), OPTS).status == OK


@pytest.mark.parametrize(
    ("label", "data", "reason"),
    [
        ("random bytes", random.Random(0).randbytes(5000), "cannot identify image: data starts"),
        ("HTML", b"<!DOCTYPE html><html><body>Not found</body></html>", "cannot identify"),
        ("empty", b"", "cannot identify image: empty data"),
        ("JPEG header only", b"\xff\xd8\xff\xe0\x00\x10JFIF", "damaged JPEG header"),
        ("TIFF (not accepted)", encode(Image.new("RGB", (100, 100)), "TIFF"), "cannot identify"),
    ],
)
def test_unidentifiable_data_is_corrupt(label: str, data: bytes, reason: str) -> None:
    result = process_image(data, OPTS)
    assert result.status == CORRUPT, label
    assert result.reason.startswith(reason), result.reason
    assert result.data is None and result.sha256 == "" and result.phash == 0


def test_html_reason_shows_the_first_bytes() -> None:
    result = process_image(b"<!DOCTYPE html><html>", OPTS)
    assert result.reason == "cannot identify image: data starts with b'<!DOCTYPE html><'"


@pytest.mark.parametrize(
    "data",
    [
        encode(photo("hubble_deep_field"), quality=92),  # draft + resize path
        small_jpeg(),  # pass-through candidate: must be fully decoded too
        small_jpeg(progressive=True),
    ],
    ids=["large", "240px-baseline", "240px-progressive"],
)
@pytest.mark.parametrize("keep", [0.5, 0.9, -2])
def test_truncated_jpeg_is_corrupt(data: bytes, keep: float) -> None:
    cut = data[: int(len(data) * keep)] if keep > 0 else data[:keep]
    result = process_image(cut, OPTS)
    assert result.status == CORRUPT
    assert result.reason.startswith("truncated JPEG: image file is truncated"), result.reason


def test_truncated_png_is_corrupt() -> None:
    data = encode(photo("coffee"), "PNG")
    result = process_image(data[: len(data) // 2], OPTS)
    assert result.status == CORRUPT and result.reason.startswith("truncated PNG"), result.reason


def test_pixel_bomb_is_refused_from_the_header(no_decoding: None) -> None:
    before = (Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    # no_decoding proves it is refused from the header; bench_budgets.py times it.
    result = process_image(png_header_only(10_000, 10_000), ImageOptions(max_pixels=1_000_000))
    assert result.status == TOO_MANY_PIXELS, result.reason
    assert (Image.MAX_IMAGE_PIXELS, list(warnings.filters)) == before


def test_pixel_limit_reason_names_the_numbers(no_decoding: None) -> None:
    result = process_image(png_header_only(5000, 5000), ImageOptions(max_pixels=1_000_000))
    assert result.status == TOO_MANY_PIXELS
    assert result.reason == "5000x5000 = 25,000,000 pixels exceeds max_pixels 1,000,000"


def test_pillow_bomb_error_is_too_many_pixels_even_under_a_higher_limit(no_decoding: None) -> None:
    data = png_header_only(20_000, 20_000)  # 400 M pixels: Pillow's own guard raises
    result = process_image(data, ImageOptions(max_pixels=10**9))
    assert result.status == TOO_MANY_PIXELS
    assert result.reason.startswith("decompression-bomb guard"), result.reason


def test_jpeg_pixel_bomb_is_refused_before_decoding(no_decoding: None) -> None:
    data = bytearray(encode(Image.new("RGB", (16, 16))))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 6000, 8000)  # height, width
    result = process_image(bytes(data), ImageOptions(max_pixels=10_000_000))
    assert result.status == TOO_MANY_PIXELS
    assert result.reason.startswith("8000x6000 = 48,000,000 pixels"), result.reason


# --- hashes -------------------------------------------------------------------------------------


def test_phash_of_pixels_is_imagehash_phash_of_the_same_pixels_in_documented_bit_order() -> None:
    rng = np.random.default_rng(7)
    smooth = [Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).resize((32, 32))]
    noisy = [Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)) for _ in range(300)]
    real = [
        photo(name).convert("L").resize((32, 32), Image.Resampling.LANCZOS)
        for name in photo_names()
    ]
    for grey in smooth + noisy + real:
        ours = imaging.phash_of_pixels(np.asarray(grey))
        expected = imagehash.phash(grey, hash_size=8)  # a 32x32 "L" image: used as it is
        assert phash_to_hex(ours) == str(expected)
        assert imagehash.hex_to_hash(phash_to_hex(ours)) == expected
        bits = expected.hash.flatten()  # row-major; bit 63 is dct[0, 0]
        assert all(((ours >> (63 - i)) & 1) == bits[i] for i in range(64))


def test_stored_phash_is_within_a_few_bits_of_imagehash_of_the_full_decode() -> None:
    """The reduced decode moves a few bits near the median, no more (docs: imaging.py)."""
    distances = []
    for name in photo_names():
        for data in (small_jpeg(name), encode(photo(name))):
            result = process_image(data, OPTS)
            assert result.data is not None and result.phash == imaging.stored_phash(result.data)
            full = imagehash.phash(decoded(result), hash_size=8)
            distances.append(hamming(result.phash, phash_from_hex(str(full))))
    assert max(distances) <= 4, distances


def test_phash_is_stable_near_for_a_reencoded_copy_and_far_for_other_photos() -> None:
    original = small_jpeg("coffee", quality=90)
    first, again = process_image(original, OPTS), process_image(original, OPTS)
    assert first.phash == again.phash and first.sha256 == again.sha256

    copy = encode(Image.open(io.BytesIO(original)), quality=70)
    assert process_image(copy, OPTS).sha256 != first.sha256
    assert hamming(process_image(copy, OPTS).phash, first.phash) <= 4
    large = process_image(encode(photo("coffee"), quality=85), OPTS)  # same photo via resize
    assert hamming(large.phash, first.phash) <= 4

    hashes = {name: process_image(small_jpeg(name), OPTS).phash for name in photo_names()}
    for a, b in itertools.combinations(hashes, 2):
        assert hamming(hashes[a], hashes[b]) > 10, (a, b)


def test_phash_helpers() -> None:
    assert phash_to_hex(0) == "0" * 16
    assert phash_to_hex(2**64 - 1) == "f" * 16
    assert phash_from_hex(phash_to_hex(0x84CC4B96BA4D333E)) == 0x84CC4B96BA4D333E
    assert hamming(0b1011, 0b0001) == 2 and hamming(5, 5) == 0
    with pytest.raises(ValueError):
        phash_from_hex("abc")


# --- options, batches, pool ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [{"max_side": 0}, {"min_side": 0}, {"max_pixels": 0}, {"quality": 0}, {"quality": 101}],
)
def test_options_are_validated(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ImageOptions(**kwargs)


def test_custom_max_side_and_quality() -> None:
    data = encode(photo("rocket"))
    low = process_image(data, ImageOptions(max_side=128, quality=40))
    high = process_image(data, ImageOptions(max_side=128, quality=95))
    assert (low.width, low.height) == (128, 85)
    assert len(low.data or b"") < len(high.data or b"")


def test_process_batch_keeps_order_and_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    items = [(small_jpeg(), OPTS), (b"junk", OPTS), (encode(photo("coffee")), OPTS)]
    assert [r.status for r in process_batch(items)] == [OK, CORRUPT, OK]

    real = imaging.process_image

    def flaky(data: bytes, options: ImageOptions) -> ImageResult:
        if data == b"boom":
            raise MemoryError("no room")
        return real(data, options)

    monkeypatch.setattr(imaging, "process_image", flaky)
    results = process_batch([(b"boom", OPTS), items[0]])
    assert results[0].status == CORRUPT
    assert results[0].reason == "internal error: MemoryError: no room"
    assert results[1].status == OK


def test_dataclasses_pickle() -> None:
    result = process_image(small_jpeg(), OPTS)
    assert pickle.loads(pickle.dumps(result)) == result
    options = ImageOptions(max_side=128)
    assert pickle.loads(pickle.dumps(options)) == options


def test_runs_in_a_real_process_pool() -> None:
    items = [(small_jpeg(), OPTS), (encode(photo("astronaut")), OPTS), (b"<html>", OPTS)]
    context = multiprocessing.get_context("spawn")  # strictest: everything crosses by pickle
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        single = pool.submit(process_image, *items[1]).result(timeout=60)
        batch = pool.submit(process_batch, items).result(timeout=60)
    assert single == process_image(*items[1])
    assert batch == process_batch(items)


# --- resume -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        encode(photo("hubble_deep_field")),
        encode(photo("coffee").convert("CMYK")),
        small_jpeg(progressive=True),
        encode(Image.new("RGBA", (300, 120), (0, 128, 0, 100)), "PNG"),
    ],
    ids=["large", "cmyk", "progressive", "png-alpha"],
)
def test_reprocessing_a_stored_image_passes_it_through_unchanged(data: bytes) -> None:
    # The pipeline re-runs process_image on files a killed run already wrote.
    first = process_image(data, OPTS)
    again = process_image(first.data or b"", OPTS)
    assert again.passthrough and again.data == first.data
    assert (again.sha256, again.phash, again.width, again.height) == (
        first.sha256,
        first.phash,
        first.width,
        first.height,
    )
