"""Inputs → Document streams: local paths/globs, S3 (s3fs, any endpoint), Hugging Face ``datasets``.

Web formats (``warc``, ``wet``, ``html``) are read by :mod:`lmpipe.web.reader` (main-text extraction, URL
filter, their own quarantine reasons).

``plan_units`` turns each configured source into work units (one per file, or one per row range of a
saved HF dataset); ``read_unit`` streams one unit as ``Document`` or ``Rejected`` items. Decoding is
strict and per record, so one bad line is quarantined with its reason and its neighbours survive:

============== ===============================================================
reason         when
============== ===============================================================
binary         NUL bytes or mostly control characters (a binary file or field)
invalid_utf8   bytes that are not UTF-8 (detail: byte offset)
malformed_json a jsonl line that does not parse, or is not an object
missing_text   the record has no string field named ``text_field``
empty          fewer than ``min_chars`` non-space characters
oversize       more than ``max_chars`` characters
============== ===============================================================
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import xxhash

from lmpipe.config import IngestConfig, SourceConfig
from lmpipe.documents import Document, Rejected

TEXT_EXT = (".txt", ".md", ".text", ".rst", ".py")
HF_ROWS_PER_UNIT = 50_000
RAW_CAP = 16 << 20  # quarantined raw bytes kept per record; beyond this the detail says it was cut


class SourceError(ValueError):
    """A configured source cannot be read at all (no files, unknown format, unreachable)."""


@dataclass(frozen=True)
class Unit:
    source: SourceConfig
    path: str  # file path/URL, or dataset location for hf_*
    format: str
    start: int = 0  # row range for hf datasets
    stop: int | None = None


@dataclass(frozen=True)
class UnitGroup:
    """Consecutive small files of one source processed (and sharded) together."""

    units: tuple[Unit, ...]


def doc_id(locator: str) -> str:
    """Stable id from where a record came from (path as configured + position)."""
    return xxhash.xxh3_64_hexdigest(locator.encode())


# ------------------------------------------------------------------------------------ planning
def _fs(src: SourceConfig):
    if src.uri.startswith("s3://"):
        import s3fs

        kwargs: dict[str, Any] = {}
        if src.endpoint_url:
            kwargs["client_kwargs"] = {"endpoint_url": src.endpoint_url}
        return s3fs.S3FileSystem(**kwargs)
    return None


def _detect_format(path: str) -> str:
    p = path.lower().removesuffix(".gz")
    if p.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if p.endswith(".parquet"):
        return "parquet"
    if p.endswith(".wet"):
        return "wet"
    if p.endswith(".warc"):
        return "warc"
    if p.endswith((".html", ".htm", ".xhtml")):
        return "html"
    if p.endswith(TEXT_EXT) or "." not in os.path.basename(p):
        return "txt"
    raise SourceError(f"cannot tell the format of {path!r}; set format: txt|jsonl|parquet|warc|wet|html on its source")


def _is_hf_disk(path: str) -> bool:
    return os.path.isdir(path) and (
        os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(os.path.join(path, "state.json"))
    )


def plan_units(src: SourceConfig, group_bytes: int = 64 << 20) -> list[tuple[str, UnitGroup]]:
    """``(key, group)`` work units for one source; ``key`` changes whenever the unit's input changes.

    Files are grouped in path order until a group holds ``group_bytes``, so a folder of many small files
    becomes a few shards rather than one tiny shard per file.
    """
    groups: list[tuple[str, UnitGroup]] = []
    keys: list[str] = []
    units: list[Unit] = []
    size = 0
    for key, unit, nbytes in _plan_files(src):
        if units and size + nbytes > group_bytes:
            groups.append(("|".join(keys), UnitGroup(tuple(units))))
            keys, units, size = [], [], 0
        keys.append(key)
        units.append(unit)
        size += nbytes
    if units:
        groups.append(("|".join(keys), UnitGroup(tuple(units))))
    return groups


def _plan_files(src: SourceConfig) -> list[tuple[str, Unit, int]]:
    fmt = src.format
    big = 1 << 62  # datasets are never grouped with anything
    if fmt == "hf_hub":
        return [(f"hf_hub:{src.uri}:{src.hf_split}", Unit(src, src.uri, "hf_hub"), big)]
    if fmt == "hf_disk" or (fmt == "auto" and _is_hf_disk(src.uri)):
        return [(k, u, big) for k, u in _plan_hf_disk(src)]
    fs = _fs(src)
    if fs is not None:
        paths = sorted("s3://" + p for p in fs.glob(src.uri.removeprefix("s3://")) if fs.isfile(p))
        infos = {p: fs.info(p) for p in paths}
        sizes = {p: int(infos[p]["size"]) for p in paths}
        keys = {p: f"{p}:{sizes[p]}:{infos[p].get('ETag', '')}" for p in paths}
    else:
        if os.path.isdir(src.uri):
            paths = sorted(os.path.join(d, f) for d, _, fs_ in os.walk(src.uri) for f in fs_)
        else:
            paths = sorted(glob.glob(src.uri, recursive=True))
        paths = [p for p in paths if os.path.isfile(p)]
        sizes = {p: os.path.getsize(p) for p in paths}
        keys = {p: f"{p}:{sizes[p]}:{os.stat(p).st_mtime_ns}" for p in paths}
    if not paths:
        raise SourceError(f"source {src.uri!r} matched no files")
    return [(keys[p], Unit(src, p, _detect_format(p) if fmt == "auto" else fmt), sizes[p]) for p in paths]


def _plan_hf_disk(src: SourceConfig) -> list[tuple[str, Unit]]:
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(src.uri)
    if isinstance(ds, DatasetDict):
        ds = ds[src.hf_split]
    n = len(ds)
    fp = getattr(ds, "_fingerprint", "")
    return [
        (f"hf_disk:{src.uri}:{fp}:{a}", Unit(src, src.uri, "hf_disk", a, min(a + HF_ROWS_PER_UNIT, n)))
        for a in range(0, max(n, 1), HF_ROWS_PER_UNIT)
    ]


# ------------------------------------------------------------------------------------- reading
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1f]")


def _looks_binary(data: bytes) -> bool:
    head = data[:8192]
    return b"\x00" in head or (len(head) > 32 and len(_CONTROL.findall(head)) > 0.1 * len(head))


def _check_text(text: str, locator: str, src: SourceConfig, cfg: IngestConfig, meta: dict) -> Document | Rejected:
    doc = Document(doc_id(locator), text, src.domain, locator, meta)
    stripped = len(text.strip())
    if "\x00" in text:
        return Rejected(doc, "binary", "NUL character in text")
    if stripped < cfg.min_chars:
        return Rejected(doc, "empty", f"{stripped} non-space chars < min_chars={cfg.min_chars}")
    if len(text) > cfg.max_chars:
        return Rejected(doc, "oversize", f"{len(text)} chars > max_chars={cfg.max_chars}")
    return doc


def _from_bytes(data: bytes, locator: str, src: SourceConfig, cfg: IngestConfig, meta: dict) -> Document | Rejected:
    raw = data[:RAW_CAP]
    cut = "" if len(data) <= RAW_CAP else f" (raw cut to {RAW_CAP} of {len(data)} bytes)"
    empty = Document(doc_id(locator), "", src.domain, locator, meta)
    if _looks_binary(data):
        return Rejected(empty, "binary", "NUL or control bytes" + cut, raw)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejected(empty, "invalid_utf8", f"byte {e.start}: {e.reason}" + cut, raw)
    return _check_text(text.removeprefix("\ufeff"), locator, src, cfg, meta)


def _open(unit: Unit) -> io.BufferedIOBase:
    fs = _fs(unit.source)
    f = fs.open(unit.path, "rb") if fs is not None else open(unit.path, "rb")  # noqa: SIM115
    return gzip.GzipFile(fileobj=f) if unit.path.endswith(".gz") else f


_HEADING = re.compile(rb"^(?: = [^=].* = |#{1,2} .+)\s*$")  # wikitext ' = Title = ' or markdown '# Title'


def _split_txt(data: bytes, how: str) -> Iterator[tuple[str, bytes]]:
    if how == "file":
        yield "", data
        return
    lines = data.split(b"\n")
    if how == "line":
        for i, line in enumerate(lines, 1):
            if line.strip():
                yield f"#L{i}", line
        return
    # paragraph: blank-line separated blocks; heading: a new block at each top-level heading line
    block: list[bytes] = []
    start = 1
    for i, line in enumerate(lines, 1):
        boundary = not line.strip() if how == "paragraph" else bool(_HEADING.match(line))
        if boundary:
            if any(b.strip() for b in block):
                yield f"#L{start}", b"\n".join(block).strip(b"\n")
            block, start = [], i
        if boundary and how == "paragraph":
            block, start = [], i + 1
        else:
            block.append(line)
    if any(b.strip() for b in block):
        yield f"#L{start}", b"\n".join(block).strip(b"\n")


def _read_txt(unit: Unit, cfg: IngestConfig) -> Iterator[Document | Rejected]:
    with _open(unit) as f:
        data = f.read()
    if unit.source.split != "file" and _looks_binary(data):  # do not shred a binary file into lines
        yield _from_bytes(data, unit.path, unit.source, cfg, {})
        return
    for suffix, piece in _split_txt(data, unit.source.split):
        yield _from_bytes(piece, unit.path + suffix, unit.source, cfg, {})


def _record(obj: Any, locator: str, src: SourceConfig, cfg: IngestConfig, raw: bytes) -> Document | Rejected:
    if not isinstance(obj, dict):
        doc = Document(doc_id(locator), "", src.domain, locator, {})
        return Rejected(doc, "malformed_json", f"expected an object, got {type(obj).__name__}", raw)
    text = obj.get(src.text_field)
    meta = {k: v for k, v in obj.items() if k != src.text_field}
    if not isinstance(text, str):
        doc = Document(doc_id(locator), "", src.domain, locator, {})
        got = "absent" if text is None else type(text).__name__
        return Rejected(doc, "missing_text", f"field {src.text_field!r} {got}", raw)
    return _check_text(text, locator, src, cfg, meta)


def _read_jsonl(unit: Unit, cfg: IngestConfig) -> Iterator[Document | Rejected]:
    with _open(unit) as f:
        for i, line in enumerate(f, 1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            locator = f"{unit.path}#L{i}"
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                doc = Document(doc_id(locator), "", unit.source.domain, locator, {})
                yield Rejected(doc, "invalid_utf8", f"byte {e.start}: {e.reason}", line)
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                doc = Document(doc_id(locator), "", unit.source.domain, locator, {})
                yield Rejected(doc, "malformed_json", f"{e.msg} at column {e.colno}", line)
                continue
            yield _record(obj, locator, unit.source, cfg, line)


def _rows(table_batches: Iterator[Any], unit: Unit, cfg: IngestConfig, base: int) -> Iterator[Document | Rejected]:
    n = base
    for batch in table_batches:
        for row in batch.to_pylist() if hasattr(batch, "to_pylist") else batch:
            n += 1
            raw = json.dumps(row, default=str, ensure_ascii=False).encode()
            yield _record(row, f"{unit.path}#R{n}", unit.source, cfg, raw)


def _read_parquet(unit: Unit, cfg: IngestConfig) -> Iterator[Document | Rejected]:
    import pyarrow.parquet as pq

    with _open(unit) as f:
        yield from _rows(pq.ParquetFile(f).iter_batches(batch_size=1000), unit, cfg, 0)


def _read_hf(unit: Unit, cfg: IngestConfig) -> Iterator[Document | Rejected]:
    from datasets import DatasetDict, load_dataset, load_from_disk

    if unit.format == "hf_disk":
        ds = load_from_disk(unit.path)
        if isinstance(ds, DatasetDict):
            ds = ds[unit.source.hf_split]
        ds = ds.select(range(unit.start, unit.stop or len(ds)))
        yield from _rows(ds.with_format("arrow").iter(batch_size=1000), unit, cfg, unit.start)
    else:
        ds = load_dataset(unit.path, split=unit.source.hf_split, streaming=True)
        yield from _rows(ds.iter(batch_size=1000), unit, cfg, 0)


def _read_web(unit: Unit, cfg: IngestConfig) -> Iterator[Document | Rejected]:
    from lmpipe.web.reader import read_web  # imported here: lmpipe.web imports this module

    yield from read_web(unit, cfg)


READERS = {"txt": _read_txt, "jsonl": _read_jsonl, "parquet": _read_parquet, "hf_disk": _read_hf, "hf_hub": _read_hf,
           "warc": _read_web, "wet": _read_web, "html": _read_web}


def read_unit(group: UnitGroup, cfg: IngestConfig) -> Iterator[Document | Rejected]:
    """Stream one group of units; returns ``{"in": records read}`` for the conservation check."""
    n = 0
    for unit in group.units:
        for item in READERS[unit.format](unit, cfg):
            n += 1
            yield item
    return {"in": n}
