"""``preview-<class>.jpg``: per class, a contact sheet of a seeded sample of its images, for a
viewer without a browser (any image viewer, a file manager's thumbnail).

Files at the folder's root, not a folder: any folder there would be one more class to
``ImageFolder``. The sample is the class's :data:`PREVIEW_IMAGES` paths of smallest
``seeded_key(f"{split seed}:preview", path)`` (deterministic: the same images give the same
sheet, whatever order they arrived in), laid out in that order. The sheets are rendered in the
imaging pool (``ctx.render_sheets``: the job hands them from this thread to its event loop;
without a pool, as in tests, they are rendered here). A sheet of 48 stored 240-px images takes
about 47 ms (48 DCT-scaled decodes and one encode; measured on this 2-core machine), so the
hand-off costs nothing that matters either way. A class with no image has no preview, and a
preview of a class no longer in the dataset is removed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.writers.base import Writer

log = logging.getLogger(__name__)

PREVIEW_PATTERN = "preview-*.jpg"
PREVIEW_IMAGES = 48  # per class: 6 rows of 8
PREVIEW_COLS = 8
PREVIEW_CELL = 120  # pixels: a sheet is 978 px wide


def preview_name(label: str) -> str:
    return f"preview-{label}.jpg"


class PreviewWriter(Writer):
    name = "preview"
    files = (PREVIEW_PATTERN,)
    archived = True

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        from asyncds.worker import SheetJob, render_sheets

        seed = f"{ctx.config.split.seed}:preview"
        jobs: list[SheetJob] = []
        for label in ctx.dataset.labels:
            sample = ctx.dataset.sample(label, seed, PREVIEW_IMAGES)
            if not sample:
                continue
            jobs.append(
                SheetJob(
                    target=os.path.join(ctx.out_dir, preview_name(label)),
                    sources=tuple(os.path.join(ctx.out_dir, path) for path in sample),
                    cols=PREVIEW_COLS,
                    cell=PREVIEW_CELL,
                )
            )
        written = [Path(job.target) for job in jobs]
        keep = {path.name for path in written}
        for stale in ctx.out_dir.glob(PREVIEW_PATTERN):
            if stale.name not in keep and (stale.is_file() or stale.is_symlink()):
                stale.unlink(missing_ok=True)
        if jobs:
            render = ctx.render_sheets or render_sheets
            render(jobs)
            log.debug("previews: %d contact sheets", len(jobs))
        return written
