"""``croissant.json``: the dataset described in Croissant 1.0 (MLCommons), which Hugging Face,
Kaggle and OpenML publish and ``mlcroissant`` reads.

- distribution: ``metadata.jsonl`` (a FileObject with its SHA-256) and the images (a FileSet of
  ``<class>/*.jpg`` per class folder that holds images: by the ImageFolder rule those are
  exactly the dataset's images, and the file stays small whatever the dataset's size);
- record set ``images``: one record per image, read from ``metadata.jsonl``: file name, label,
  split, license (id and name), creator and photo page;
- record set ``image_files``: the images themselves (path and content) from the FileSet.

Paths are relative: ``mlcroissant`` resolves them against the folder of ``croissant.json`` (the
output folder, or the extracted archive), offline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from asyncds.assembly.context import AssemblyContext
from asyncds.assembly.writers.base import Writer, write_json
from asyncds.assembly.writers.metadata import METADATA_FILE

CROISSANT_FILE = "croissant.json"
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"

# The Croissant 1.0 JSON-LD context, as mlcroissant writes it.
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}

# The record set's fields: (name, metadata.jsonl column, Croissant data type, description).
_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("file_name", "file_name", "sc:Text", "the image's path, relative to the dataset's folder"),
    ("label", "label", "sc:Text", "the class"),
    ("split", "split", "sc:Text", "train or test (train_test_split.json)"),
    ("photo_id", "photo_id", "sc:Text", "the Flickr photo id"),
    ("license", "license", "sc:Integer", "the Flickr license id"),
    ("license_name", "license_name", "sc:Text", "the license's name"),
    ("creator", "ownername", "sc:Text", "the author, as Flickr names them"),
    ("creator_id", "owner", "sc:Text", "the author's Flickr id"),
    ("photo_page", "photo_page", "sc:URL", "the photo's page on Flickr (credit it)"),
)
_METADATA_ID = "metadata-jsonl"
_IMAGES_ID = "image-files"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def croissant(ctx: AssemblyContext, metadata_sha256: str) -> dict[str, Any]:
    folders = ctx.dataset.folders()
    total = ctx.split.train + ctx.split.test
    tags = "; ".join(f"{c.label}: {', '.join(c.tags)}" for c in ctx.classes)
    fields = [
        {
            "@type": "cr:Field",
            "@id": f"images/{name}",
            "name": name,
            "description": description,
            "dataType": data_type,
            "source": {"fileObject": {"@id": _METADATA_ID}, "extract": {"column": column}},
        }
        for name, column, data_type, description in _FIELDS
    ]
    files = {"fileSet": {"@id": _IMAGES_ID}}
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": CONFORMS_TO,
        "name": ctx.out_dir.name or "asyncds-dataset",
        "description": (
            f"{total} Flickr images in {len(folders)} classes ({ctx.split.train} train, "
            f"{ctx.split.test} test), found by tag search ({tags}); made by asyncds. Each image "
            "keeps its own license: credit its creator (record set 'images')."
        ),
        # Each image has its own license: the records carry it; the card (README.md) sums up.
        "license": "https://www.flickr.com/creativecommons/",
        "url": "https://www.flickr.com/",
        "distribution": [
            {
                "@type": "cr:FileObject",
                "@id": _METADATA_ID,
                "name": METADATA_FILE,
                "contentUrl": METADATA_FILE,
                "encodingFormat": "application/jsonlines",
                "sha256": metadata_sha256,
            },
            {
                "@type": "cr:FileSet",
                "@id": _IMAGES_ID,
                "name": _IMAGES_ID,
                "description": "the images, one folder per class",
                "encodingFormat": "image/jpeg",
                "includes": [f"{folder}/*.jpg" for folder in folders],
            },
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": "images",
                "name": "images",
                "description": "one record per image: its label, split, license and creator",
                "key": {"@id": "images/file_name"},
                "field": fields,
            },
            {
                "@type": "cr:RecordSet",
                "@id": "image_files",
                "name": "image_files",
                "description": "the image files: path and content",
                "field": [
                    {
                        "@type": "cr:Field",
                        "@id": "image_files/file_name",
                        "name": "file_name",
                        "dataType": "sc:Text",
                        "source": {**files, "extract": {"fileProperty": "filepath"}},
                    },
                    {
                        "@type": "cr:Field",
                        "@id": "image_files/image",
                        "name": "image",
                        "dataType": "sc:ImageObject",
                        "source": {**files, "extract": {"fileProperty": "content"}},
                    },
                ],
            },
        ],
    }


class CroissantWriter(Writer):
    name = "croissant"
    files = (CROISSANT_FILE,)
    archived = True

    def finish(self, ctx: AssemblyContext) -> list[Path]:
        # metadata.jsonl is written (committed) by the metadata writer before this one.
        sha = _sha256(ctx.out_dir / METADATA_FILE)
        target = ctx.out_dir / CROISSANT_FILE
        write_json(target, croissant(ctx, sha))
        return [target]
