"""``urls_data.json``: ``{class: [image url, ...]}`` in config order, each class's URLs in
search order, read from the dataset index (which keeps each image's URL and rank)."""

from __future__ import annotations

from pathlib import Path

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.writers.base import Writer, write_json_lists

URLS_FILE = "urls_data.json"


class UrlsWriter(Writer):
    name = "urls"
    files = (URLS_FILE,)

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        target = ctx.out_dir / URLS_FILE
        labels = [spec.name for spec in ctx.config.classes]
        write_json_lists(target, ((label, ctx.dataset.urls(label)) for label in labels))
        return [target]
