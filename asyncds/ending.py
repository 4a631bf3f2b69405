"""What a finished run prints last: the outcome and what to do next, from ``summary.json``.

Pure: :func:`render_ending` turns the summary into lines; the CLI prints them (on stdout, on a
terminal or not, so ``make demo`` and logs keep them) and repeats the warnings on stderr.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_TOP_REASONS = 3  # drop reasons named in the ending; the rest are summed up


@dataclass(frozen=True, slots=True)
class Ending:
    lines: tuple[str, ...]  # the outcome and where to go next
    warnings: tuple[str, ...]  # said again at the very end: short classes, licenses, ...


def render_ending(
    summary: Mapping[str, Any],
    out_dir: Path,
    wall_time_s: float,
    unconfigured: Sequence[str] = (),
) -> Ending:
    """``unconfigured``: folders at the root that are not a class, as the folder holds now."""
    totals = summary["totals"]
    classes = summary["classes"]
    per_class = ", ".join(f"{label} {c['good']}/{c['requested']}" for label, c in classes.items())
    lines = [
        f"done in {wall_time_s:.1f} s: {totals['good']:,} of {totals['requested']:,} images "
        f"({per_class})",
        _dropped(totals.get("dropped", {})),
        *_fixes(totals),
        f"dataset: {out_dir} (train {totals['train']:,}, test {totals['test']:,})",
        f'load it: datasets.load_dataset("{out_dir.as_posix()}")  (pip install datasets)',
        f"look at: {out_dir / 'report.html'} in a browser (tick photos to exclude them), "
        f"{out_dir / 'summary.txt'}, and ATTRIBUTION.md to credit the authors",
    ]
    extra = list(unconfigured)
    warnings = list(summary.get("warnings", []))
    if extra:
        warnings.append(
            f"folders of classes not in the config: {', '.join(extra)} (ImageFolder would take "
            "them for classes); add --prune to delete them"
        )
    return Ending(tuple(lines), tuple(warnings))


def _fixes(totals: Mapping[str, Any]) -> list[str]:
    """A line for the user's own fixes (the exclude list, images deleted by hand), if any."""
    excluded, by_hand = totals.get("excluded", 0), totals.get("removed_by_hand", 0)
    parts = [f"{excluded:,} excluded"] if excluded else []
    parts += [f"{by_hand:,} removed by hand"] if by_hand else []
    return [f"your fixes: {', '.join(parts)} (replaced where Flickr had more)"] if parts else []


def _dropped(dropped: Mapping[str, int]) -> str:
    counted = sorted(((n, reason) for reason, n in dropped.items() if n), reverse=True)
    total = sum(n for n, _ in counted)
    if not total:
        return "dropped: none"
    named = ", ".join(f"{reason} {n:,}" for n, reason in counted[:_TOP_REASONS])
    rest = sum(n for n, _ in counted[_TOP_REASONS:])
    others = f", other {rest:,}" if rest else ""
    return f"dropped {total:,} (replaced where Flickr had more): {named}{others}"
