"""Copying finished output folders (the report) to a filesystem URI: a local folder or S3.

The lake reaches object storage through DuckDB (sleeptime/storage/lake.py); other outputs are
plain files, written locally first and copied whole, so a reader never sees half a report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.fs as pafs

from sleeptime.storage.lake import is_object_store

if TYPE_CHECKING:
    from sleeptime.config import S3Settings


def filesystem_for(uri: str, s3: S3Settings | None = None) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and path for ``uri``; s3:// URIs use ``s3`` (endpoint, region, ...)
    and take their keys from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)."""
    if is_object_store(uri):
        s3_kwargs = {}
        if s3 is not None:
            s3_kwargs = {"region": s3.region, "scheme": "https" if s3.use_ssl else "http",
                         "force_virtual_addressing": s3.url_style == "vhost"}
            if s3.endpoint:
                s3_kwargs["endpoint_override"] = s3.endpoint
        return pafs.S3FileSystem(**s3_kwargs), uri.split("://", 1)[1].rstrip("/")
    return pafs.LocalFileSystem(), str(Path(uri).expanduser().absolute())


def copy_folder(local: Path, uri: str, s3: S3Settings | None = None) -> list[str]:
    """Copy every file under ``local`` to ``uri`` (same relative paths); returns the written paths."""
    fs, base = filesystem_for(uri, s3)
    written = []
    for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
        target = f"{base}/{path.relative_to(local).as_posix()}"
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with path.open("rb") as src, fs.open_output_stream(target) as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        written.append(target)
    return written
