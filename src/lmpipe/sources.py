"""Inputs → work units: local paths/globs, S3 (s3fs, any endpoint), Hugging Face ``datasets``.

Web formats (``warc``, ``wet``, ``html``) are read by :mod:`lmpipe.web.reader` (main-text extraction, URL
filter, their own quarantine reasons).

``plan_units`` turns each configured source into work units (one per file, or one per row range of a
saved HF dataset), grouped so that many small files make a few shards. Reading a unit is
``lmpipe.formats.read_unit``; turning bytes into text is ``lmpipe.decoding.decode_text``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from typing import Any

import xxhash

from lmpipe.ingest_config import SourceConfig

TEXT_EXT = (".txt", ".md", ".text", ".rst", ".py")
HF_ROWS_PER_UNIT = 50_000


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


def printable(path: str) -> str:
    """``path`` as stored text: a file name that is not UTF-8 reaches Python with lone surrogates (PEP 383),
    which no Parquet string can hold, so its undecodable bytes are written as ``\\xNN`` escapes."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")


# ------------------------------------------------------------------------------------ planning
def filesystem(src: SourceConfig):
    """An s3fs filesystem for ``s3://`` sources; None for local paths."""
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
    fs = filesystem(src)
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
