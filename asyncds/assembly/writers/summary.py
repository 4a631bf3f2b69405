"""``summary.json`` (for programs) and ``summary.txt`` (the same facts, for people): per class
requested / candidates / good / train / test / dropped by reason (the exclude list and images
removed by hand among them), the split, the run.

It runs after the other writers (it is near the end of the registry) so that a writer's
``ctx.summary_fields`` and ``ctx.warnings`` make it into the report."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.dataset import images
from asyncds.assembly.writers.base import Writer, write_json
from asyncds.assembly.writers.split import SUBSET_FILE
from asyncds.files import unconfigured_folders, write_atomic

SUMMARY_TXT = "summary.txt"
SUMMARY_JSON = "summary.json"

_TOTAL_KEYS = (
    "requested",
    "candidates",
    "good",
    "train",
    "test",
    "dropped_total",
    "pending",
    "surplus",
    "missing_files",
    "excluded",
    "removed_by_hand",
)


class SummaryWriter(Writer):
    name = "summary"
    files = (SUMMARY_TXT, SUMMARY_JSON)
    archived = True

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        summary = summary_json(ctx)
        json_path, txt_path = ctx.out_dir / SUMMARY_JSON, ctx.out_dir / SUMMARY_TXT
        write_json(json_path, summary)
        write_atomic(txt_path, render_summary(summary).encode())
        return [json_path, txt_path]


def summary_json(ctx: AssemblyContext) -> dict[str, Any]:
    config, split, subset, stats = ctx.config, ctx.split, ctx.subset, ctx.stats
    per_class = {c.label: c.to_json() for c in ctx.classes}
    totals: dict[str, Any] = {key: sum(c[key] for c in per_class.values()) for key in _TOTAL_KEYS}
    dropped_totals: Counter[str] = Counter()
    for c in ctx.classes:
        dropped_totals.update(c.dropped)
    totals["dropped"] = {reason: dropped_totals.get(reason, 0) for reason in dropped_totals}
    return {
        "classes": per_class,
        "totals": totals,
        "split": {
            "type": config.split.type,
            "test_size": config.split.test_size,
            "seed": config.split.seed,
            "description": config.split.describe(),
            "train": split.train,
            "test": split.test,
        },
        "subset": None
        if subset is None or config.subset is None
        else {
            "percentage": config.subset.percentage,
            "seed": config.subset.seed,
            "file": SUBSET_FILE,
            "train": subset.train,
            "test": subset.test,
        },
        "dedup": {
            "cross_class": config.dedup.cross_class,
            "phash_distance": config.dedup.phash_distance,
        },
        "run": {
            "wall_time_s": round(stats.wall_time_s, 3),
            "images_fetched": stats.images_fetched,
            "images_per_s": round(stats.images_per_s, 2),
            "api_calls": stats.api_calls,
        },
        "unconfigured_folders": unconfigured_folders(ctx.out_dir, per_class),
        **ctx.summary_fields,
        "warnings": list(ctx.warnings),
    }


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Left-aligned first column, right-aligned numbers."""
    cells = [list(map(str, header)), *[list(map(str, r)) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for row in cells:
        first = row[0].ljust(widths[0])
        rest = [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join([first, *rest]).rstrip())
    return lines


def _license_lines(licenses: Mapping[str, Any]) -> list[str]:
    """The dataset's images per license (by id), each with its classes that have some."""
    rows = [[name, entry["id"], entry["images"]] for name, entry in licenses.items()]
    table = _table(("license", "id", "images"), rows)
    lines = ["images by license:", f"  {table[0]}"]
    for line, entry in zip(table[1:], licenses.values(), strict=True):
        by_class = ", ".join(f"{label} {n}" for label, n in entry["classes"].items() if n)
        lines.append(f"  {line}  ({by_class})")
    return lines


def _fixes(c: Mapping[str, Any]) -> str:
    parts = []
    if c.get("excluded"):
        parts.append(f"{images(c['excluded'])} excluded")
    if c.get("removed_by_hand"):
        parts.append(f"{images(c['removed_by_hand'])} removed by hand")
    return ", ".join(parts)


def render_summary(summary: Mapping[str, Any]) -> str:
    """``summary.txt``: the same facts as ``summary.json``, for people."""
    columns = ("requested", "candidates", "good", "train", "test", "dropped_total", "pending")
    header = ("class", "requested", "candidates", "good", "train", "test", "dropped", "pending")
    rows: list[list[Any]] = [
        [label, *(c[k] for k in columns)] for label, c in summary["classes"].items()
    ]
    totals = summary["totals"]
    rows.append(["total", *(totals[k] for k in columns)])
    lines = ["asyncds dataset summary", "", *_table(header, rows), ""]

    lines.append("dropped, by reason:")
    for label, c in summary["classes"].items():
        nonzero = [f"{reason} {n}" for reason, n in c["dropped"].items() if n]
        lines.append(f"  {label}: {', '.join(nonzero) if nonzero else 'none'}")
    leftovers = [
        f"  {label}: {images(c['surplus'])} beyond the requested count (kept in the folder, "
        "not in the dataset)"
        for label, c in summary["classes"].items()
        if c["surplus"]
    ]
    if leftovers:
        lines += ["surplus:", *leftovers]
    fixes = [
        f"  {label}: {_fixes(c)}"
        for label, c in summary["classes"].items()
        if c.get("excluded") or c.get("removed_by_hand")
    ]
    if fixes:
        lines += ["removed by you (replaced from further search results):", *fixes]
    lines.append("")
    if summary.get("licenses"):  # from the attribution writer
        lines += [*_license_lines(summary["licenses"]), ""]

    split = summary["split"]
    lines.append(f"split: {split['description']} -> {split['train']} train, {split['test']} test")
    subset = summary["subset"]
    if subset:
        lines.append(
            f"subset: {subset['percentage']:g}% of each split and class, seed {subset['seed']}"
            f" -> {subset['train']} train, {subset['test']} test ({subset['file']})"
        )
    dedup = summary["dedup"]
    near = (
        f"near duplicates within {dedup['phash_distance']} bits"
        if dedup["phash_distance"]
        else "near duplicates not checked"
    )
    lines.append(f"dedup: cross-class copies {dedup['cross_class']}, {near}")
    run = summary["run"]
    lines.append(
        f"run: {run['wall_time_s']:.1f} s, {run['images_fetched']} images fetched "
        f"({run['images_per_s']:.1f} images/s), {run['api_calls']} API calls"
    )
    if summary.get("unconfigured_folders"):
        lines.append(
            f"folders of classes not in the config: {', '.join(summary['unconfigured_folders'])}"
            " (ImageFolder would take them for classes; --prune removes them)"
        )
    lines.append("")
    if summary["warnings"]:
        lines.append("warnings:")
        lines += [f"  - {w}" for w in summary["warnings"]]
    else:
        lines.append("warnings: none")
    return "\n".join(lines) + "\n"
