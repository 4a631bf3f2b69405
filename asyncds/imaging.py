"""Pure CPU work for the process pool: verify, orient, convert, resize, encode, hash.

Nothing here does I/O: :func:`process_image` takes the downloaded bytes and returns an
:class:`ImageResult` holding the bytes to store. Both functions and both dataclasses pickle, so
the pipeline can run them in a ``ProcessPoolExecutor``; :func:`process_batch` runs several images
per task to amortise the hand-off.

Statuses (``ImageResult.status``) and the shape of their ``reason``:

- ``ok`` -- ``data`` is a baseline RGB JPEG, at most ``max_side`` on its longest side.
- ``corrupt`` -- not a JPEG/PNG/GIF/WebP/BMP, or it does not decode completely
  (``"truncated JPEG: image file is truncated (37 bytes not processed)"``,
  ``"cannot identify image: data starts with b'<!DOCTYPE html><'"``).
- ``too_small`` -- longest side below ``min_side`` (``"50x30 is smaller than min_side 64"``).
- ``too_many_pixels`` -- width*height from the header above ``max_pixels``
  (``"10000x10000 = 100,000,000 pixels exceeds max_pixels 1,000,000"``). Pillow's own
  decompression-bomb guard (``Image.MAX_IMAGE_PIXELS``) stays in force too, so the effective limit
  is the lower of the two; its error and warning are reported under this status as well.

What is kept, and why. ``python -m benchmarks.bench_imaging`` (Pillow 13, libjpeg-turbo 3.2,
2 vCPUs) renders sources with real detail from the emulator's photographs and times each path in
ms per image; PSNR (dB) is against full decode + LANCZOS, "stored" after the q90 JPEG encode
(one run, 2026-12-02; absolute times vary with the machine's load, ratios much less):

=====================================  ========  ========  =============  =============
path                                   1024x768  500x375   resize PSNR    stored PSNR
=====================================  ========  ========  =============  =============
(a) full decode + ``thumbnail()``      8.06 ms   3.56 ms   42.2 / 47.1    32.69 / 36.18
(b1) draft to >= 1x target + LANCZOS   4.33 ms   2.10 ms   37.2 / 40.3    31.89 / 35.36
(b2) draft to >= 2x target + LANCZOS   7.02 ms   4.44 ms   49.5 / inf     33.24 / 36.53
(b4) draft to >= 2x target + BICUBIC   5.77 ms   3.54 ms   42.3 / 47.1    32.76 / 36.18
reference: full decode + LANCZOS      14.63 ms   4.66 ms   inf / inf      33.24 / 36.53
``process_image`` (b4 + the rest)      6.88 ms   4.31 ms
=====================================  ========  ========  =============  =============

*Kept: (b4)*, the fastest path whose stored image is within 0.5 dB of the reference at every
source size (until 2026-12 the rule was 0.1 dB and (b2) was kept; on the benchmark's neutral
1024x768 photos (b4) stores 0.25 dB below (b2), still above img2dataset's own output). It decodes
JPEGs with DCT scaling (``Image.draft``) to the smallest power-of-two size still at least twice
the target, then resizes with BICUBIC using the draft box: 18 % less time than (b2), whose
13-tap LANCZOS alone cost 3.1 ms of a 1024-px image. Drafting all the way down to the target
(b1) aliases fine texture (1.2-1.4 dB worse stored), so it is rejected. On top come
``optimize=True`` (0.25-0.3 ms, 3 % fewer bytes) and hashing the stored file (0.35 ms).

The usual input is Flickr's 240-px ``url_s``: a baseline, upright YCbCr JPEG within size is
*passed through*, its bytes kept after one complete but reduced decode that is both the
integrity check and the hash's input: 0.36 ms, against 0.80 ms for a full decode plus
``imagehash.phash`` (hash version 1) and 1.46 ms to re-encode and hash it (re-encoding would
also lose quality and change the sha256).

The perceptual hash (:func:`stored_phash`) is a function of the *stored* bytes alone, so both
paths and a resumed run's adoption of a stored file agree. The stored JPEG is decoded DCT-scaled
and luma-only (``draft("L", (32, 32))``: every Huffman code is still read), resized to 32x32
with LANCZOS, and bit ``63 - (8*row + col)`` is ``dct[row, col] > median`` of the low 8x8 of its
2-D DCT-II (:func:`phash_of_pixels`: the same bits ``imagehash.phash(hash_size=8)`` gives for
the same 32x32 pixels, in numpy alone, so no scipy, PyWavelets or imagehash in any install).
Against imagehash of the full decode, a stored image's hash moves 0.44 bits on average, at most
6; on a mixed corpus of 1,141 images dedup decides the same but for pairs whose distance sits on
the threshold (``benchmarks/bench_phash.py``; ``tests/test_phash_agreement.py`` lists each).
``HASH_VERSION`` names the definition: a folder made under another one has its hashes
re-derived from its files (``job.rehash_stored_images``). Values use all 64 bits: SQLite's
INTEGER is signed, so store ``phash_to_hex(h)`` (or convert) rather than the raw int.

EXIF orientation uses the transposition table of ``ImageOps.exif_transpose`` but applies it
after the resize, so it moves 240-px pixels rather than full-size ones. Alpha is composited on
white; EXIF, ICC, XMP and comments are not copied into re-encoded files (pass-through files keep
their bytes). Under the same options every stored file qualifies for pass-through: ``process_image``
of an ``ok`` result's ``data`` returns those bytes, sha256 and phash again (resume relies on it).
Not thread-safe: :func:`process_image` sets warning filters for its duration, which is fine in a
worker process.
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

if TYPE_CHECKING:
    import numpy as np

# numpy is imported where it is used: the main process imports this module for its types and
# statuses only, and numpy alone is 20 MB of resident memory per process.

OK = "ok"
CORRUPT = "corrupt"
TOO_SMALL = "too_small"
TOO_MANY_PIXELS = "too_many_pixels"

# Formats worth accepting from an image host; a narrow list keeps exotic plugins (EPS runs
# Ghostscript) away from untrusted bytes.
_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")  # JPEG also opens MPO files
_MAGIC = (
    (b"\xff\xd8", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF8", "GIF"),
    (b"RIFF", "WebP"),
    (b"BM", "BMP"),
)
_WHITE = (255, 255, 255)
_ORIENTATION_TAG = 0x0112
# The table of ImageOps.exif_transpose: EXIF orientation -> the transposition that uprights it.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Draft (DCT-scaled decode) no further down than this multiple of the target size: the LANCZOS
# step that follows then has enough pixels to match a full-resolution resize (see docstring).
_DRAFT_HEADROOM = 2
_SOF_BASELINE = 0xC0
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG, DAC are not frames
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# The perceptual hash: a 32x32 grey image, the low 8x8 of its DCT-II, one bit per coefficient.
_HASH_SIDE = 32
_HASH_BITS = 64
# Bumped when the same stored bytes would get another phash (or the stored bytes of the same
# download would differ): the job then re-derives the hashes of stored images from their files.
# 1: imagehash.phash of the full decode. 2: the reduced decode of stored_phash.
HASH_VERSION = 2


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """What to make of each image; mirrors ``config.ImageSettings``."""

    max_side: int = 240
    quality: int = 90
    min_side: int = 64
    max_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        if self.max_side < 1 or self.min_side < 1 or self.max_pixels < 1:
            raise ValueError("max_side, min_side and max_pixels must be positive")
        if not 1 <= self.quality <= 100:
            raise ValueError(f"quality must be in 1..100, got {self.quality}")


@dataclass(frozen=True, slots=True)
class ImageResult:
    """The outcome for one image.

    For ``ok``: ``data`` is the JPEG to store, ``width``/``height`` its size, ``sha256`` the hex
    digest of ``data``, ``phash`` its 64-bit perceptual hash and ``passthrough`` whether ``data``
    is the input unchanged. Otherwise ``data`` is None, sizes and ``phash`` are 0 and ``sha256``
    is empty; ``reason`` says what was wrong.
    """

    status: str
    reason: str
    data: bytes | None
    width: int
    height: int
    sha256: str
    phash: int
    passthrough: bool

    @property
    def ok(self) -> bool:
        return self.status == OK


def process_image(data: bytes, options: ImageOptions) -> ImageResult:
    """Turn downloaded bytes into the image to store (see the module docstring).

    Every problem with the data is a status; an exception escapes only for a fault of this code
    or the machine (e.g. MemoryError while encoding), which :func:`process_batch` catches.
    """
    with warnings.catch_warnings():
        # Pillow warns about odd EXIF or ICC data it has already coped with; that is not a result.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return _process(data, options)


def process_batch(items: Sequence[tuple[bytes, ImageOptions]]) -> list[ImageResult]:
    """:func:`process_image` over several items, for one pool task; never raises."""
    return [process_image_safely(data, options) for data, options in items]


def process_image_safely(data: bytes, options: ImageOptions) -> ImageResult:
    """:func:`process_image`, with a fault of this code reported as ``corrupt``: one bad item
    must not lose a batch."""
    try:
        return process_image(data, options)
    except Exception as exc:
        return _rejected(CORRUPT, f"internal error: {type(exc).__name__}: {exc}")


def phash_to_hex(phash: int) -> str:
    """16 lowercase hex digits, identical to ``str()`` of the ``imagehash.ImageHash``."""
    return f"{phash:016x}"


def phash_from_hex(text: str) -> int:
    """Inverse of :func:`phash_to_hex`."""
    if len(text) != 16:
        raise ValueError(f"a 64-bit phash is 16 hex digits, got {text!r}")
    return int(text, 16)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two perceptual hashes."""
    return (a ^ b).bit_count()


def _process(data: bytes, options: ImageOptions) -> ImageResult:
    try:
        im = Image.open(io.BytesIO(data), formats=_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return _rejected(TOO_MANY_PIXELS, f"decompression-bomb guard: {exc}")
    except UnidentifiedImageError:
        return _rejected(CORRUPT, _unidentified_reason(data))
    except Exception as exc:  # plugins raise many types on malformed headers
        return _rejected(CORRUPT, f"damaged {_sniff(data)} header: {_describe(exc)}")

    with im:
        fmt = im.format or "image"
        width, height = im.size
        # Decide from the header alone, before any pixel is decoded.
        if width * height > options.max_pixels:
            return _rejected(
                TOO_MANY_PIXELS,
                f"{width}x{height} = {width * height:,} pixels exceeds max_pixels "
                f"{options.max_pixels:,}",
            )
        if max(width, height) < options.min_side:
            return _rejected(
                TOO_SMALL, f"{width}x{height} is smaller than min_side {options.min_side}"
            )
        orientation = _orientation(im)

        if _can_pass_through(im, data, orientation, options):
            try:
                # A complete (reduced) decode: a truncated file must not be stored.
                phash = stored_phash(data)
            except Exception as exc:
                return _rejected(CORRUPT, _decode_reason(fmt, exc))
            return _stored(data, width, height, phash, passthrough=True)

        target = _fit(width, height, options.max_side)
        box = None
        if target is not None and fmt in ("JPEG", "MPO"):
            # DCT-scaled decode; the box maps the original frame into the drafted pixels.
            drafted = im.draft("RGB", (target[0] * _DRAFT_HEADROOM, target[1] * _DRAFT_HEADROOM))
            box = drafted[1] if drafted else None
        try:
            im.load()
            rgb = _to_rgb(im)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            return _rejected(TOO_MANY_PIXELS, f"decompression-bomb guard: {exc}")
        except Exception as exc:
            return _rejected(CORRUPT, _decode_reason(fmt, exc))

        if target is not None:
            rgb = rgb.resize(target, Image.Resampling.BICUBIC, box=box)
        if orientation in _UPRIGHT:
            rgb = rgb.transpose(_UPRIGHT[orientation])
        rgb.info = {}  # Pillow's JPEG writer copies a source comment from info; store pixels only
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=options.quality, optimize=True)
        stored = out.getvalue()
        width, height = rgb.size
    return _stored(stored, width, height, stored_phash(stored), passthrough=False)


def _stored(data: bytes, width: int, height: int, phash: int, *, passthrough: bool) -> ImageResult:
    """The ok result for the stored bytes ``data``."""
    return ImageResult(
        status=OK,
        reason="passed through" if passthrough else "re-encoded",
        data=data,
        width=width,
        height=height,
        sha256=hashlib.sha256(data).hexdigest(),
        phash=phash,
        passthrough=passthrough,
    )


def _rejected(status: str, reason: str) -> ImageResult:
    return ImageResult(status, reason, None, 0, 0, "", 0, False)


def stored_phash(data: bytes) -> int:
    """The perceptual hash of a stored JPEG, decoding it completely at a reduced scale.

    Raises (OSError, ValueError, ...) when ``data`` does not decode completely: the decode is
    the integrity check too. See the module docstring for the definition.
    """
    with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
        # DCT-scaled, luma-only decode: every Huffman code is still read (a truncated or
        # damaged file still fails), but only the scaled-down Y plane is reconstructed.
        im.draft("L", (_HASH_SIDE, _HASH_SIDE))
        im.load()
        grey = im if im.mode == "L" else im.convert("L")
        small = grey.resize((_HASH_SIDE, _HASH_SIDE), Image.Resampling.LANCZOS)
    import numpy as np

    pixels = np.frombuffer(small.tobytes(), dtype=np.uint8).reshape(_HASH_SIDE, _HASH_SIDE)
    return phash_of_pixels(pixels)


@functools.cache
def _dct_rows() -> np.ndarray:
    """The first 8 rows of the (unscaled) 32-point DCT-II matrix."""
    import numpy as np

    n = np.arange(_HASH_SIDE)
    return np.cos(np.pi * np.outer(np.arange(8), 2 * n + 1) / (2 * _HASH_SIDE))


def phash_of_pixels(pixels: np.ndarray) -> int:
    """pHash of a 32x32 grey image: low 8x8 of its 2-D DCT-II against their median.

    The same bits as ``imagehash.phash(hash_size=8)`` computes from the same 32x32 pixels
    (its scipy DCT differs only by a constant factor, which a median comparison ignores).
    """
    import numpy as np

    rows = _dct_rows()
    low = rows @ pixels.astype(np.float64) @ rows.T  # dct[:8, :8], row-major
    flat = low.ravel()
    median = np.partition(flat, (_HASH_BITS // 2 - 1, _HASH_BITS // 2))
    threshold = (median[_HASH_BITS // 2 - 1] + median[_HASH_BITS // 2]) / 2
    return int.from_bytes(np.packbits(flat > threshold).tobytes(), "big")


def _can_pass_through(
    im: Image.Image, data: bytes, orientation: int | None, options: ImageOptions
) -> bool:
    """A baseline YCbCr JPEG that is already upright and within size can be stored as is."""
    if im.format != "JPEG" or im.mode != "RGB" or orientation != 1:
        return False
    if not options.min_side <= max(im.size) <= options.max_side:
        return False
    # libjpeg treats an Adobe transform of 0, or components named R, G, B, as RGB-coded.
    if im.info.get("adobe_transform") == 0 and "adobe" in im.info:
        return False
    if [c[0] for c in getattr(im, "layer", [])] == [ord("R"), ord("G"), ord("B")]:
        return False
    return _jpeg_frame_marker(data) == _SOF_BASELINE


def _jpeg_frame_marker(data: bytes) -> int | None:
    """The SOFn marker byte of a JPEG (0xC0 baseline, 0xC2 progressive, ...), or None."""
    if not data.startswith(b"\xff\xd8"):
        return None
    i, end = 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker in _SOF_MARKERS:
            return marker
        elif marker in (0xDA, 0xD9):  # scan or end before any frame header
            return None
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
        else:
            length = int.from_bytes(data[i + 2 : i + 4], "big")
            if length < 2:
                return None
            i += 2 + length
    return None


def _orientation(im: Image.Image) -> int | None:
    """EXIF orientation (1 when absent), or None when the EXIF block cannot be read."""
    try:
        value = im.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # damaged EXIF: the pixels may be fine, the orientation is unknown
        return None
    return value if isinstance(value, int) else None


def _fit(width: int, height: int, max_side: int) -> tuple[int, int] | None:
    """Size with the longest side ``max_side`` and the same aspect, or None: never upscale."""
    longest = max(width, height)
    if longest <= max_side:
        return None
    if width >= height:
        return max_side, max(1, round(height * max_side / width))
    return max(1, round(width * max_side / height)), max_side


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB pixels: alpha and palette transparency composited on white, 16-bit grey scaled."""
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", im.size, _WHITE)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit grey: keep the top byte; convert("L") would clip everything above 255 to white.
        import numpy as np

        grey = np.clip(np.asarray(im, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(grey.astype(np.uint8)).convert("RGB")
    return im.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def _sniff(data: bytes) -> str:
    """The format its first bytes claim, for messages only."""
    return next((name for magic, name in _MAGIC if data.startswith(magic)), "image")


def _unidentified_reason(data: bytes) -> str:
    if not data:
        return "cannot identify image: empty data"
    claimed = _sniff(data)
    if claimed != "image":
        return f"cannot identify image: damaged {claimed} header"
    return f"cannot identify image: data starts with {bytes(data[:16])!r}"


def _decode_reason(fmt: str, exc: BaseException) -> str:
    text = _describe(exc)
    kind = "truncated" if isinstance(exc, EOFError) or "truncated" in text else "undecodable"
    return f"{kind} {fmt}: {text}"


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


# -- contact sheets (the preview files beside the class folders) -----------------------------

_SHEET_BACKGROUND = (32, 32, 32)
_SHEET_MISSING = (96, 96, 96)  # a cell whose image did not decode
_SHEET_GAP = 2


def contact_sheet(
    images: Sequence[bytes | None], cols: int, cell: int, *, quality: int = 85
) -> bytes:
    """A JPEG grid of ``images`` (stored JPEG bytes), ``cols`` wide, each fitted into a
    ``cell``-pixel square and centred, row by row in the order given.

    Pure and deterministic (same bytes in, same bytes out). An image that is None or does not
    decode is a plain grey cell, never an exception: one damaged file must not cost a class its
    preview. Each image is decoded DCT-scaled (``draft``) to about the cell's size.
    """
    if cols < 1 or cell < 1:
        raise ValueError("cols and cell must be positive")
    n = max(1, len(images))
    cols = min(cols, n)
    rows = -(-n // cols)
    step = cell + _SHEET_GAP
    sheet = Image.new(
        "RGB", (cols * step + _SHEET_GAP, rows * step + _SHEET_GAP), _SHEET_BACKGROUND
    )
    for i, data in enumerate(images):
        x = _SHEET_GAP + (i % cols) * step
        y = _SHEET_GAP + (i // cols) * step
        thumb = _sheet_cell(data, cell)
        if thumb is None:
            sheet.paste(_SHEET_MISSING, (x, y, x + cell, y + cell))
            continue
        sheet.paste(thumb, (x + (cell - thumb.width) // 2, y + (cell - thumb.height) // 2))
    out = io.BytesIO()
    # No optimize: it buffers every coefficient (2 MB more at the peak) to save 2 % of bytes.
    sheet.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _sheet_cell(data: bytes | None, cell: int) -> Image.Image | None:
    if not data:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data), formats=("JPEG",)) as im:
                im.draft("RGB", (cell, cell))
                im.load()
                rgb = im.convert("RGB")
        rgb.thumbnail((cell, cell), Image.Resampling.BICUBIC)
        return rgb
    except Exception:  # not a JPEG, truncated, a bomb: a grey cell
        return None
