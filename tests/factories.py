"""Test records built in one place; each test overrides only the fields it is about."""

from __future__ import annotations

from typing import Any

from asyncds.flickr import Candidate


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
