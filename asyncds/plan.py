"""``python -m asyncds plan config.yaml``: what a run will take, before it starts.

One search call per class (the run's own query: tags, tag_mode, license, media, dates) gives
Flickr's number of matches; from it and the config come the estimates. Nothing is downloaded
and nothing is written.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from contextlib import aclosing
from dataclasses import dataclass

from asyncds.config import ClassSpec, Config
from asyncds.flickr import SEARCH_CAP, ClassSearch, FlickrClient, limiter_parameters

# Mean stored size of a 240-px JPEG at quality 90 on the benchmark's photos (11.6 kB); other
# sizes scale with the area. The archive holds a second copy of every image (level 0).
_BYTES_AT_240 = 11_600
# Candidates a run usually needs beyond `count`: failed downloads and duplicates are replaced.
_REPLACEMENT_MARGIN = 0.10


@dataclass(frozen=True, slots=True)
class ClassPlan:
    label: str
    requested: int
    matches: int
    api_calls: int

    @property
    def short(self) -> bool:
        return self.matches < self.requested


@dataclass(frozen=True, slots=True)
class Plan:
    classes: tuple[ClassPlan, ...]
    calls_per_hour: int
    api_seconds: float
    disk_bytes: int

    @property
    def api_calls(self) -> int:
        return sum(c.api_calls for c in self.classes)


def search_calls(wanted: int, matches: int, per_page: int) -> int:
    """API calls to read ``wanted`` candidates of a search with ``matches`` results.

    Pages of ``per_page``; past Flickr's 4,000-result cap the search is cut into date windows of
    at most 4,000 results, and finding each window costs about two more calls (a halving step
    reads one page of the over-full window it splits).
    """
    needed = min(matches, math.ceil(wanted * (1 + _REPLACEMENT_MARGIN)))
    if needed <= 0:
        return 1  # the call that finds nothing
    calls = math.ceil(needed / per_page)
    if matches > SEARCH_CAP:
        calls += 2 * math.ceil(needed / SEARCH_CAP)
    return calls


def api_time_s(calls: int, calls_per_hour: int) -> float:
    """Seconds ``calls`` take under the key's rate limiter (its first few calls are a burst)."""
    burst, rate = limiter_parameters(calls_per_hour)
    return max(0, calls - burst) / rate


def disk_estimate(images: int, max_side: int) -> int:
    """Bytes for ``images`` stored images and the archive's copy of them."""
    return 2 * images * round(_BYTES_AT_240 * (max_side / 240) ** 2)


async def class_matches(client: FlickrClient, spec: ClassSpec, config: Config) -> int:
    """Flickr's matches for the class's query: the first page of the run's own search."""
    settings = dataclasses.replace(config.flickr, per_page=1)  # only the total is wanted
    search = ClassSearch(client, spec, settings, max_side=config.image.max_side, dedupe=False)
    async with aclosing(search.pages()) as pages:
        async for page in pages:
            return page.total
    return 0


async def make_plan(config: Config, client: FlickrClient) -> Plan:
    totals = await asyncio.gather(*(class_matches(client, s, config) for s in config.classes))
    per_page = config.flickr.per_page
    classes = tuple(
        ClassPlan(s.name, s.count, total, search_calls(s.count, total, per_page))
        for s, total in zip(config.classes, totals, strict=True)
    )
    images = sum(min(c.requested, c.matches) for c in classes)
    calls = sum(c.api_calls for c in classes)
    return Plan(
        classes=classes,
        calls_per_hour=config.flickr.calls_per_hour,
        api_seconds=api_time_s(calls, config.flickr.calls_per_hour),
        disk_bytes=disk_estimate(images, config.image.max_side),
    )


def render_plan(plan: Plan) -> str:
    header = ("class", "Flickr matches", "requested", "will end", "API calls")
    rows = [
        (
            c.label,
            f"{c.matches:,}",
            f"{c.requested:,}",
            f"short ({c.matches:,})" if c.short else "full",
            f"{c.api_calls:,}",
        )
        for c in plan.classes
    ]
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = [
        "  ".join(
            [r[0].ljust(widths[0]), *(v.rjust(w) for v, w in zip(r[1:], widths[1:], strict=True))]
        )
        for r in (header, *rows)
    ]
    lines.append("")
    lines.append(
        f"API calls: about {plan.api_calls:,}, {_duration(plan.api_seconds)} at "
        f"{plan.calls_per_hour:,} calls an hour (flickr.calls_per_hour)"
    )
    lines.append(f"disk: about {plan.disk_bytes / 1e6:,.0f} MB (the images and dataset.tgz's copy)")
    short = [c.label for c in plan.classes if c.short]
    if short:
        lines.append(
            f"short: {', '.join(short)}: Flickr has fewer matches than requested; add tags, "
            "use tag_mode any, or lower the count"
        )
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
