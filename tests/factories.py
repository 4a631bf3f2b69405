"""Test records built in one place; each test overrides only the fields it is about."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from PIL import Image

from asyncds.files import image_relpath
from asyncds.flickr import Candidate
from asyncds.state import Outcome, StateStore, Status


def candidate(label: str, pid: str, **fields: Any) -> Candidate:
    """A plausible search candidate for photo ``pid`` of class ``label``."""
    values: dict[str, Any] = {
        "photo_id": pid,
        "label": label,
        "url": f"http://127.0.0.1/{pid}_m.jpg",
        "width": 240,
        "height": 180,
        "owner": "1@N01",
        "ownername": "Jane",
        "title": f"photo {pid}",
        "license": 4,
        "date_upload": 1_600_000_000,
    }
    values.update(fields)
    return Candidate(**values)


def store_image(
    state: StateStore, out: Path, label: str, pid: str, data: bytes, phash: int
) -> None:
    """Write ``data`` as the stored image of ``label``/``pid`` and record it as downloaded."""
    relpath = image_relpath(label, pid)
    (out / relpath).write_bytes(data)
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
    state.record(
        Outcome(
            label,
            pid,
            Status.OK,
            sha256=hashlib.sha256(data).hexdigest(),
            phash=f"{phash:016x}",
            path=relpath,
            stored_width=width,
            stored_height=height,
        )
    )
