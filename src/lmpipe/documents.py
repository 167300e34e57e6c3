"""The one document record, and its on-disk form: sharded Parquet with a manifest.

A dataset is a directory of ``*.parquet`` shards plus ``manifest.json`` (shard list, doc and byte counts,
SHA-256 of every shard). Writers stream (bounded row-group buffers, atomic renames); readers stream
record batches, so no stage ever holds a corpus in memory.

Rejected records (quarantined input, filtered or duplicate documents) are a dataset too, in the same
files with three more columns: ``reason``, ``detail`` and ``raw`` (the original bytes where the text could
not be decoded), so nothing is ever lost silently.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
FORMAT = "lmpipe-docs/1"

DOC_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("domain", pa.string()),
        ("source", pa.string()),
        ("meta", pa.string()),  # JSON object (dates as ISO 8601, bytes as base64); a string keeps the schema stable
    ]
)
REJECT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),  # null when the input could not be decoded
        ("domain", pa.string()),
        ("source", pa.string()),
        ("meta", pa.string()),
        ("reason", pa.string()),  # machine-readable, e.g. 'invalid_utf8', 'gopher_repetition'
        ("detail", pa.string()),  # human-readable, e.g. 'dup_line_frac=0.41 > 0.30'
        ("raw", pa.binary()),  # original bytes where text is null
    ]
)


class UnwritableError(ValueError):
    """A record no Parquet row can hold (text that is not valid Unicode, meta that is not JSON)."""


def _json_value(value: Any) -> Any:
    """Meta values JSON lacks, as Parquet and HF datasets give them: dates and times as ISO 8601, durations
    as seconds, bytes as base64, decimals and UUIDs as strings. Anything else is not JSON (``unwritable``)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, timedelta):  # Arrow durations
        return value.total_seconds()
    raise TypeError(f"meta value of type {type(value).__name__} is not JSON")


@dataclass(slots=True)
class Document:
    id: str
    text: str
    domain: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        meta = json.dumps(self.meta, sort_keys=True, ensure_ascii=False, default=_json_value) if self.meta else "{}"
        return {"id": self.id, "text": self.text, "domain": self.domain, "source": self.source, "meta": meta}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Document:
        meta = row.get("meta")
        return cls(row["id"], row["text"], row["domain"], row["source"], json.loads(meta) if meta else {})


@dataclass(slots=True)
class Rejected:
    """A record that left the main stream, with why. ``doc.text`` may be '' when ``raw`` holds the input."""

    doc: Document
    reason: str
    detail: str = ""
    raw: bytes | None = None

    def to_row(self) -> dict[str, Any]:
        row = self.doc.to_row()
        if self.raw is not None:
            row["text"] = None
        row.update(reason=self.reason, detail=self.detail, raw=self.raw)
        return row


def as_writable_rejection(item: Document | Rejected, error: Exception) -> Rejected:
    """``item`` quarantined in a form that always writes: its strings escaped, the original as JSON in ``raw``.

    A kept document becomes reason ``unwritable``; a rejected one keeps its reason and gains the note.
    """
    doc = item.doc if isinstance(item, Rejected) else item

    def safe(s: str) -> str:
        return s.encode("utf-8", "backslashreplace").decode("utf-8")

    original = {"id": doc.id, "text": doc.text, "domain": doc.domain, "source": doc.source, "meta": doc.meta}
    raw = item.raw if isinstance(item, Rejected) and item.raw is not None else (
        json.dumps(original, ensure_ascii=True, default=repr).encode("ascii"))
    note = f"not writable as is ({safe(str(error))}); original in raw as escaped JSON"
    reason, detail = (item.reason, f"{safe(item.detail)}; {note}") if isinstance(item, Rejected) else ("unwritable", note)
    return Rejected(Document(safe(doc.id), "", safe(doc.domain), safe(doc.source), {}), reason, detail, raw)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass
class ShardInfo:
    path: str  # relative to the dataset directory
    docs: int
    text_bytes: int
    file_bytes: int
    sha256: str


class ShardWriter:
    """Writes rows to ``<dir>/<prefix>-NNNN.parquet``, starting a new shard every ``docs_per_shard`` rows.

    Each shard is written to a temporary name and renamed when complete, so a killed run never leaves a
    truncated shard under a final name.
    """

    def __init__(
        self,
        directory: str | Path,
        prefix: str,
        schema: pa.Schema = DOC_SCHEMA,
        docs_per_shard: int = 5000,
        row_group: int = 1000,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prefix, self.schema = prefix, schema
        self.docs_per_shard, self.row_group = docs_per_shard, min(row_group, docs_per_shard)
        self.shards: list[ShardInfo] = []
        # column buffers: building Arrow arrays per column is far cheaper than from_pylist on row dicts
        self._cols: dict[str, list[Any]] = {name: [] for name in schema.names}
        self._str_cols = [f.name for f in schema if pa.types.is_string(f.type)]
        self._buffered = 0
        self._writer: pq.ParquetWriter | None = None
        self._n = self._bytes = 0

    def _tmp(self) -> Path:
        return self.dir / f".{self.prefix}-{len(self.shards):04d}.parquet.tmp"

    def write(self, row: dict[str, Any] | Document | Rejected) -> None:
        """Buffer one row; ``UnwritableError`` (nothing buffered) if a string is not valid Unicode or meta not JSON."""
        try:
            if not isinstance(row, dict):
                row = row.to_row()
            text_bytes = len((row.get("text") or "").encode("utf-8"))
            for name in self._str_cols:  # Arrow would fail on the whole batch at flush time
                value = row.get(name)
                if value is not None and name != "text":
                    value.encode("utf-8")
        except (TypeError, ValueError, RecursionError) as e:  # UnicodeEncodeError is a ValueError
            raise UnwritableError(str(e)) from e
        for name, col in self._cols.items():
            col.append(row.get(name))
        self._buffered += 1
        self._bytes += text_bytes
        if self._buffered >= self.row_group:
            self._flush()
        if self._n + self._buffered >= self.docs_per_shard:
            self._close_shard()

    def write_all(self, rows: Iterable[dict[str, Any] | Document | Rejected]) -> None:
        for row in rows:
            self.write(row)

    def _flush(self) -> None:
        if not self._buffered:
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._tmp(), self.schema, compression="zstd")
        arrays = [pa.array(self._cols[f.name], type=f.type) for f in self.schema]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        self._n += self._buffered
        self._buffered = 0
        for col in self._cols.values():
            col.clear()

    def _close_shard(self) -> None:
        self._flush()
        if self._writer is None:
            return
        self._writer.close()
        tmp, final = self._tmp(), self.dir / f"{self.prefix}-{len(self.shards):04d}.parquet"
        os.replace(tmp, final)
        self.shards.append(
            ShardInfo(final.name, self._n, self._bytes, final.stat().st_size, sha256_file(final))
        )
        self._writer, self._n, self._bytes = None, 0, 0

    def close(self) -> list[ShardInfo]:
        self._close_shard()
        return self.shards

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        elif self._writer is not None:  # leave no half-written temp file behind
            self._writer.close()
            self._tmp().unlink(missing_ok=True)


def write_manifest(directory: str | Path, shards: list[ShardInfo], extra: dict[str, Any] | None = None) -> dict:
    """Write ``manifest.json`` for ``shards`` (in order) and return it."""
    directory = Path(directory)
    digest = hashlib.sha256("".join(s.sha256 for s in shards).encode()).hexdigest()
    manifest = {
        "format": FORMAT,
        "docs": sum(s.docs for s in shards),
        "text_bytes": sum(s.text_bytes for s in shards),
        "file_bytes": sum(s.file_bytes for s in shards),
        "sha256": digest,
        "shards": [asdict(s) for s in shards],
        **(extra or {}),
    }
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, directory / MANIFEST)
    return manifest


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{directory} is not an lmpipe dataset (no {MANIFEST}); run the stage that makes it")
    return json.loads(path.read_text())


def shard_paths(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    return [directory / s["path"] for s in read_manifest(directory)["shards"]]


def iter_batches(path: str | Path, columns: list[str] | None = None, batch_size: int = 1000) -> Iterator[pa.RecordBatch]:
    """Stream record batches from one shard, or from every shard of a dataset directory in order."""
    path = Path(path)
    files = shard_paths(path) if path.is_dir() else [path]
    for f in files:
        yield from pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=columns)


def iter_documents(path: str | Path, batch_size: int = 1000) -> Iterator[Document]:
    """Stream Documents from one shard or a dataset directory."""
    cols = list(DOC_SCHEMA.names)
    for batch in iter_batches(path, cols, batch_size):
        for row in batch.to_pylist():
            yield Document.from_row(row)


def count_documents(path: str | Path) -> int:
    return int(read_manifest(path)["docs"])
