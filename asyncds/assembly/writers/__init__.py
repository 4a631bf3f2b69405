"""The artifact writers, in the order assembly runs them.

A new format is one file here (a :class:`~asyncds.assembly.writers.base.Writer`) and one
line in :data:`WRITERS`. Order matters only at the end: the report and the summary report what
the writers before them added (``ctx.summary_fields``, ``ctx.warnings``, the previews), and the
archive packs the files the writers before it marked ``archived``, so those stay last.
"""

from __future__ import annotations

from collections.abc import Callable

from asyncds.assembly.writers.archive import ArchiveWriter
from asyncds.assembly.writers.attribution import AttributionWriter
from asyncds.assembly.writers.base import Writer
from asyncds.assembly.writers.card import CardWriter
from asyncds.assembly.writers.croissant import CroissantWriter
from asyncds.assembly.writers.metadata import MetadataWriter
from asyncds.assembly.writers.parquet import ParquetWriter
from asyncds.assembly.writers.preview import PreviewWriter
from asyncds.assembly.writers.report import ReportWriter
from asyncds.assembly.writers.split import SplitWriter
from asyncds.assembly.writers.summary import SummaryWriter
from asyncds.assembly.writers.urls import UrlsWriter
from asyncds.assembly.writers.urls_parquet import UrlsParquetWriter
from asyncds.assembly.writers.webdataset import WebDatasetWriter

# A fresh writer per assembly: writers hold their open files between start and finish.
WRITERS: tuple[Callable[[], Writer], ...] = (
    SplitWriter,
    UrlsWriter,
    MetadataWriter,
    AttributionWriter,  # before the summary: it adds the counts per license
    CardWriter,
    CroissantWriter,  # after metadata: it hashes metadata.jsonl
    WebDatasetWriter,  # export: only when asked
    ParquetWriter,  # export: only when asked
    UrlsParquetWriter,  # export: only when asked
    PreviewWriter,  # before the report, which links the contact sheets
    ReportWriter,  # after attribution: it shows the counts per license
    SummaryWriter,  # stays next to last
    ArchiveWriter,  # stays last
)

__all__ = ["WRITERS", "Writer"]
