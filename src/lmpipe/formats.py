"""One unit → a stream of ``Document`` or ``Rejected`` items, per format (txt, jsonl, parquet, HF datasets;
warc, wet and html in :mod:`lmpipe.web.reader`, with their own reasons).

Every fault of the input is a quarantine record with a reason, never an exception, and every record read
before a fault is kept. Counts are conserved: each item yielded is one record in (``read_unit`` returns
``{"in": n}``), and a fault that ends a file is itself one record.

================ ==========================================================================================
reason           when (detail)
================ ==========================================================================================
binary           NUL bytes or mostly control bytes (a binary file or field)
undecodable      not UTF-8 and no encoding detected with confidence (the UTF-8 error offset, the best guess)
malformed_json   a jsonl line that does not parse, or is not an object
lone_surrogate   a JSON string escapes half a UTF-16 pair (``"\\ud800"``) and ``surrogates: quarantine``
missing_text     the record has no string field named ``text_field``
empty            fewer than ``min_chars`` non-space characters
oversize         more than ``max_chars`` characters
truncated        a gzip stream ends before its end marker (compressed and decompressed byte offsets, line)
corrupt          gzip data that does not inflate, or a Parquet file / row group that cannot be read
================ ==========================================================================================

Text in other encodings is decoded (``lmpipe.decoding``) and its encoding recorded in ``meta["encoding"]``.
(``unwritable``, a record no Parquet string can hold, is added by the shard runner.)
"""

from __future__ import annotations

import io
import itertools
import json
import re
from collections import deque
from collections.abc import Iterator
from typing import Any

from lmpipe.decoding import UndecodableError, decode_text
from lmpipe.documents import Document, Rejected
from lmpipe.ingest_config import IngestConfig, SourceConfig
from lmpipe.records import RAW_CAP, check_text
from lmpipe.sources import Unit, UnitGroup, doc_id, printable
from lmpipe.streams import StreamFault, chunks, collect, lines, open_raw, read_all

PARQUET_BATCH = 1000
_WS = " \t\n\r\x0b\x0c"  # what bytes.strip() strips; text is split with the same set so both paths agree
# a heading line: wikitext ' = Title = ' or markdown '# Title'
_HEADING_RE = r"^(?: = [^=].* = |#{1,2} .+)[ \t\n\r\x0b\x0c]*$"
_HEADING = {str: re.compile(_HEADING_RE), bytes: re.compile(_HEADING_RE.encode())}
# json.loads turns '\ud800' escapes into lone surrogates; only a line holding such an escape can have one
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_WIDE_BOMS = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")  # UTF-16/32: b'\n' is not a line break there


def _reject(locator: str, src: SourceConfig, reason: str, detail: str, raw: bytes | None = None) -> Rejected:
    if raw is not None and len(raw) > RAW_CAP:
        detail += f" (raw cut to {RAW_CAP} of {len(raw)} bytes)"
        raw = raw[:RAW_CAP]
    return Rejected(Document(doc_id(locator), "", src.domain, locator, {}), reason, detail, raw)


def _encoding_meta(encoding: str) -> dict[str, str]:
    return {} if encoding == "utf-8" else {"encoding": encoding}


def _fault(locator: str, src: SourceConfig, fault: StreamFault, what: str = "", raw: bytes = b"") -> Rejected:
    """The record a stream fault becomes; ``what`` names the salvaged bytes kept in ``raw``."""
    return _reject(locator, src, fault.reason, fault.detail + (f"; {what} is in raw" if what else ""), raw)


# ----------------------------------------------------------------------------------------- txt
def _split_txt(data: str | bytes, how: str) -> Iterator[tuple[str, Any]]:
    """``(locator suffix, piece)``: the file, its non-blank lines, paragraphs, or heading sections."""
    if how == "file":
        yield "", data
        return
    nl, ws = ("\n", _WS) if isinstance(data, str) else (b"\n", _WS.encode())
    lines_ = data.split(nl)
    if how == "line":
        for i, line in enumerate(lines_, 1):
            if line.strip(ws):
                yield f"#L{i}", line
        return
    heading = _HEADING[type(data)]
    block: list = []
    start = 1
    for i, line in enumerate(lines_, 1):
        boundary = not line.strip(ws) if how == "paragraph" else bool(heading.match(line))
        if boundary:
            if any(b.strip(ws) for b in block):
                yield f"#L{start}", nl.join(block).strip(nl)
            block, start = [], i
        if boundary and how == "paragraph":
            block, start = [], i + 1
        else:
            block.append(line)
    if any(b.strip(ws) for b in block):
        yield f"#L{start}", nl.join(block).strip(nl)


def _read_txt(unit: Unit, cfg: IngestConfig) -> Iterator[Document | Rejected]:
    src, base = unit.source, printable(unit.path)
    data, fault = read_all(unit)
    if fault and src.split == "file":  # the one record is the cut-off file
        yield _fault(base, src, fault, "the file as far as it could be read", data)
        return
    tail = b""
    if fault:  # complete lines are split as usual; the last block and the cut-off line go with the fault
        cut = data.rfind(b"\n") + 1
        data, tail = data[:cut], data[cut:]
    try:
        dec = decode_text(data, min_confidence=cfg.min_encoding_confidence)
        pieces, meta = list(_split_txt(dec.text, src.split)), _encoding_meta(dec.encoding)
    except UndecodableError as e:
        if e.reason == "binary" or src.split == "file":  # do not shred a binary file into lines
            yield _reject(base, src, e.reason, e.detail, data)
            if fault:
                yield _fault(base + "#fault", src, fault, "the cut-off line", tail)
            return
        pieces, meta = list(_split_txt(data, src.split)), {}  # decode each piece: one bad block, one record
    last = pieces.pop() if fault and pieces else None
    for suffix, piece in pieces:
        if isinstance(piece, str):
            yield check_text(piece, base + suffix, src, cfg, meta)
            continue
        try:
            dec = decode_text(piece, min_confidence=cfg.min_encoding_confidence)
        except UndecodableError as e:
            yield _reject(base + suffix, src, e.reason, e.detail, piece)
        else:
            yield check_text(dec.text, base + suffix, src, cfg, _encoding_meta(dec.encoding))
    if fault:  # raw: the original bytes from the last block's first line ('#L<n>') to the cut
        suffix = last[0] if last else "#fault"
        block = data.split(b"\n", int(suffix[2:]) - 1)[-1] if last else b""
        yield _fault(base + suffix, src, fault, "the last block and the cut-off line", block + tail)


# --------------------------------------------------------------------------------------- jsonl
def _scrub_str(s: str, where: str, found: list[str]) -> str:
    m = _SURROGATE.search(s)
    if m is None:
        return s
    where = where if len(where) <= 120 else where[:117] + "..."
    found.append(f"lone surrogate U+{ord(m.group()):04X} in {where} at char {m.start()}")
    return _SURROGATE.sub("\ufffd", s)


def _scrub(obj: Any, found: list[str]) -> Any:
    """``obj`` (fresh from ``json.loads``, changed in place) with lone surrogates replaced by U+FFFD.

    ``found`` gets where each string held one. Breadth-first with a queue, not recursion: JSON nested
    hundreds deep parses, and must not overflow the stack here.
    """
    if isinstance(obj, str):
        return _scrub_str(obj, "record", found)
    queue: deque[tuple[Any, str]] = deque([(obj, "record")])
    while queue:
        node, where = queue.popleft()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, value in items:
            path = f"{where}.{_escaped(key)}" if isinstance(node, dict) else f"{where}[{key}]"
            if isinstance(value, str):
                node[key] = _scrub_str(value, path, found)
            elif isinstance(value, dict | list):
                queue.append((value, path))
            if isinstance(node, dict) and _SURROGATE.search(key):
                node[_scrub_str(key, f"a key of {where}", found)] = node.pop(key)
    return obj


def _escaped(key: str) -> str:
    return key.encode("utf-8", "backslashreplace").decode("utf-8")


def _record(
    obj: Any, locator: str, src: SourceConfig, cfg: IngestConfig, raw: bytes, extra: dict | None = None
) -> Document | Rejected:
    if not isinstance(obj, dict):
        return _reject(locator, src, "malformed_json", f"expected an object, got {type(obj).__name__}", raw)
    text = obj.get(src.text_field)
    if not isinstance(text, str):
        got = "absent" if text is None else type(text).__name__
        return _reject(locator, src, "missing_text", f"field {src.text_field!r} {got}", raw)
    meta = {k: v for k, v in obj.items() if k != src.text_field}
    for k, v in (extra or {}).items():
        meta.setdefault(k, v)  # a field of the record itself wins over what lmpipe adds
    return check_text(text, locator, src, cfg, meta)


def _jsonl_records(
    numbered: Iterator[tuple[int, bytes]],
    base: str,
    src: SourceConfig,
    cfg: IngestConfig,
    encoding: str = "utf-8",
) -> Iterator[Document | Rejected]:
    learned: str | None = None  # a legacy encoding detected on an earlier line of this file
    file_meta = _encoding_meta(encoding)  # lines of a UTF-16/32 file arrive transcoded to UTF-8
    for i, line in numbered:
        line = line.rstrip(b"\r")
        if not line or line.isspace():
            continue
        locator = f"{base}#L{i}"
        try:
            dec = decode_text(line, learned, min_confidence=cfg.min_encoding_confidence)
        except UndecodableError as e:
            yield _reject(locator, src, e.reason, e.detail, line)
            continue
        if dec.encoding != "utf-8":
            learned = dec.encoding
        try:
            obj = json.loads(dec.text)
        except json.JSONDecodeError as e:
            yield _reject(locator, src, "malformed_json", f"{e.msg} at column {e.colno}", line)
            continue
        except (ValueError, RecursionError) as e:  # e.g. an integer of 5,000 digits, arrays nested 10^5 deep
            yield _reject(locator, src, "malformed_json", f"{type(e).__name__}: {e}"[:300], line)
            continue
        if (b"\\ud" in line or b"\\uD" in line) and _SURROGATE_ESCAPE.search(dec.text):
            found: list[str] = []
            obj = _scrub(obj, found)
            if found and cfg.surrogates == "quarantine":
                yield _reject(locator, src, "lone_surrogate", f"line {i}: " + "; ".join(found[:3]), line)
                continue
        yield _record(
            obj, locator, src, cfg, line, file_meta if dec.encoding == "utf-8" else {"encoding": dec.encoding}
        )


def _read_jsonl(unit: Unit, cfg: IngestConfig) -> Iterator[Document | Rejected]:
    src, base = unit.source, printable(unit.path)
    pieces = chunks(unit)
    try:
        head = next(pieces, b"")
    except StreamFault as fault:
        yield _fault(f"{base}#L1", src, fault)
        return
    if head.startswith(_WIDE_BOMS):  # UTF-16/32: decode the whole file, then read it as UTF-8 lines
        data, fault = collect(itertools.chain([head], pieces))
        try:
            dec = decode_text(data, min_confidence=cfg.min_encoding_confidence)
        except UndecodableError as e:
            yield _reject(f"{base}#L1", src, e.reason, e.detail, data)
        else:
            yield from _jsonl_records(lines(iter([dec.text.encode("utf-8")])), base, src, cfg, dec.encoding)
        if fault:
            yield _fault(f"{base}#fault", src, fault)
        return
    try:
        yield from _jsonl_records(lines(itertools.chain([head], pieces)), base, src, cfg)
    except StreamFault as fault:
        yield _fault(f"{base}#L{fault.line}", src, fault, f"the cut-off line {fault.line}", fault.partial)


# ------------------------------------------------------------------------------------- parquet
def _rows(batches: Iterator[Any], unit: Unit, cfg: IngestConfig, base: int) -> Iterator[Document | Rejected]:
    n = base
    path = printable(unit.path)
    for batch in batches:
        for row in batch.to_pylist() if hasattr(batch, "to_pylist") else batch:
            n += 1
            raw = json.dumps(row, default=str, ensure_ascii=False).encode()
            yield _record(row, f"{path}#R{n}", unit.source, cfg, raw)


def _parquet_faults() -> tuple[type[BaseException], ...]:
    import pyarrow as pa

    # what pyarrow raises on bytes that are not (valid) Parquet: Arrow errors, thrift/codec failures as
    # OSError, bad UTF-8 in a string column as UnicodeDecodeError (a ValueError), short reads as EOFError
    return (pa.ArrowException, OSError, ValueError, EOFError, IndexError)


def _read_parquet(unit: Unit, cfg: IngestConfig) -> Iterator[Document | Rejected]:
    import pyarrow.parquet as pq

    src, base = unit.source, printable(unit.path)
    faults = _parquet_faults()
    if unit.path.endswith(".gz"):  # Parquet needs random access: decompress first
        data, fault = read_all(unit)
        if fault:
            yield _fault(f"{base}#R0", src, fault, "the decompressed part", data)
            return
        f: Any = io.BytesIO(data)
    else:
        f = open_raw(unit)
    with f:
        try:
            pf = pq.ParquetFile(f)
            sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)]
        except faults as e:
            f.seek(0)
            head = f.read(RAW_CAP + 1)
            yield _reject(
                f"{base}#R0", src, "corrupt", f"not a readable Parquet file: {type(e).__name__}: {e}", head
            )
            return
        first = 0  # rows before this row group
        for g, size in enumerate(sizes):
            batches = pf.iter_batches(batch_size=PARQUET_BATCH, row_groups=[g])
            done = 0
            while True:
                try:
                    batch = next(batches, None)
                    rows = batch.to_pylist() if batch is not None else []
                except faults as e:
                    yield _reject(
                        f"{base}#RG{g}",
                        src,
                        "corrupt",
                        f"row group {g}: rows {first + done + 1}-"
                        f"{first + size} unreadable ({type(e).__name__}: {e})"[:1000],
                    )
                    break
                if batch is None:
                    break
                yield from _rows([rows], unit, cfg, first + done)
                done += len(rows)
            first += size


# ------------------------------------------------------------------------------ hugging face
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
    from lmpipe.web.reader import read_web  # imported here: lmpipe.web.reader imports this module

    yield from read_web(unit, cfg)


READERS = {
    "txt": _read_txt,
    "jsonl": _read_jsonl,
    "parquet": _read_parquet,
    "hf_disk": _read_hf,
    "hf_hub": _read_hf,
    "warc": _read_web,  # WARC / WET / HTML: main-text extraction, URL filter (lmpipe.web)
    "wet": _read_web,
    "html": _read_web,
}


def read_unit(group: UnitGroup, cfg: IngestConfig) -> Iterator[Document | Rejected]:
    """Stream one group of units; returns ``{"in": records read}`` for the conservation check."""
    n = 0
    for unit in group.units:
        for item in READERS[unit.format](unit, cfg):
            n += 1
            yield item
    return {"in": n}
