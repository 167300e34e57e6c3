"""Inputs that used to stop the whole ingest stage: each becomes quarantine records, the rest survives.

Expectations are computed independently of lmpipe: record counts by hand, gzip prefixes by ``zlib``,
Parquet row-group boundaries from pyarrow's own metadata.
"""

import datetime as dt
import gzip
import json
import zlib
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmpipe.documents import Document, iter_documents
from lmpipe.executors import LocalExecutor
from lmpipe.ingest import ingest
from lmpipe.ingest_config import IngestConfig
from lmpipe.sharded import run_stage


def _run(tmp_path, sources, **kw):
    cfg = IngestConfig(sources=sources, **kw)
    stats = ingest(cfg, tmp_path / "docs", tmp_path / "rej", LocalExecutor(1))
    docs = list(iter_documents(tmp_path / "docs"))
    rej = [r for f in sorted((tmp_path / "rej").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert stats["in"] == stats["kept"] + stats["rejected"] == len(docs) + len(rej)
    assert all(r["reason"] and r["detail"] for r in rej)
    return stats, docs, rej


SURROGATE_LINES = [
    b'{"text": "before"}',
    b'{"text": "lone \\ud800 high", "title": "t\\udc00"}',  # valid JSON, not encodable as UTF-8
    b'{"text": "pair \\ud83d\\ude00 is fine"}',  # a proper pair is one astral character
    b'{"text": "after"}',
]


def test_lone_surrogate_is_replaced_by_default(tmp_path):
    (tmp_path / "s.jsonl").write_bytes(b"\n".join(SURROGATE_LINES) + b"\n")
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(tmp_path / "s.jsonl"), "domain": "web"}])
    assert [d.text for d in docs] == ["before", "lone \ufffd high", "pair \U0001f600 is fine", "after"]
    assert docs[1].meta == {"title": "t\ufffd"} and not rej


def test_lone_surrogate_quarantined_when_asked(tmp_path):
    (tmp_path / "s.jsonl").write_bytes(b"\n".join(SURROGATE_LINES) + b"\n")
    stats, docs, rej = _run(
        tmp_path / "o", [{"uri": str(tmp_path / "s.jsonl"), "domain": "web"}], surrogates="quarantine"
    )
    assert [d.text for d in docs] == ["before", "pair \U0001f600 is fine", "after"]
    assert [r["reason"] for r in rej] == ["lone_surrogate"]
    assert rej[0]["source"].endswith("s.jsonl#L2") and rej[0]["raw"] == SURROGATE_LINES[1]
    assert "U+D800" in rej[0]["detail"] and "char 5" in rej[0]["detail"]


def test_deeply_nested_json_is_quarantined_or_scrubbed_without_overflow(tmp_path):
    def nested(depth, leaf):
        return '{"text": "s \\ud800", "m": ' + "[" * depth + leaf + "]" * depth + "}"

    (tmp_path / "d.jsonl").write_text(nested(900, '"\\udc00"') + "\n" + nested(5000, "") + "\n")
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(tmp_path / "d.jsonl"), "domain": "web"}])
    assert [d.text for d in docs] == ["s \ufffd"] and docs[0].meta["m"] != []
    leaf = docs[0].meta["m"]
    for _ in range(900):
        (leaf,) = leaf
    assert leaf == "\ufffd"
    assert [(r["reason"], r["source"].rsplit("#", 1)[1]) for r in rej] == [("malformed_json", "L2")]


def test_truncated_gzip_keeps_records_before_the_cut(tmp_path):
    lines = [json.dumps({"text": f"record {i} " + "filler " * (i % 7)}).encode() for i in range(400)]
    full = gzip.compress(b"\n".join(lines) + b"\n")
    cut = full[: len(full) // 2]
    (tmp_path / "cut.jsonl.gz").write_bytes(cut)
    (tmp_path / "ok.jsonl").write_bytes(b'{"text": "next file survives"}\n')
    # what a gzip reader can recover from the prefix, computed with zlib directly
    recovered = zlib.decompressobj(wbits=31).decompress(cut)
    complete = recovered.count(b"\n")
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(tmp_path / "*.jsonl*"), "domain": "web"}])
    assert [d.text for d in docs] == [json.loads(x)["text"] for x in lines[:complete]] + [
        "next file survives"
    ]
    assert [r["reason"] for r in rej] == ["truncated"]
    assert rej[0]["source"].endswith(f"cut.jsonl.gz#L{complete + 1}")
    assert rej[0]["raw"] == recovered[recovered.rindex(b"\n") + 1 :]  # the cut-off partial line
    assert f"line {complete + 1}" in rej[0]["detail"] and f"byte {len(cut)}" in rej[0]["detail"]


def test_corrupt_gzip_data_is_quarantined(tmp_path):
    body = b"".join(json.dumps({"text": f"doc {i}"}).encode() + b"\n" for i in range(2000))
    data = bytearray(gzip.compress(body))
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the deflate stream
    (tmp_path / "flip.jsonl.gz").write_bytes(bytes(data))
    (tmp_path / "flip.txt.gz").write_bytes(bytes(data))
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(tmp_path / "flip.*"), "domain": "web"}])
    assert {r["reason"] for r in rej} <= {"corrupt", "malformed_json"} and "corrupt" in stats["by_reason"]
    assert stats["by_reason"]["corrupt"] == 2  # one per file
    texts = [d.text for d in docs if d.source.startswith(str(tmp_path / "flip.jsonl.gz"))]
    assert texts == [f"doc {i}" for i in range(len(texts))]  # a clean prefix survives, in order


def _parquet(path, n_groups=3, rows=50, compression="zstd"):
    table = pa.table({"text": [f"row {i} " + "x" * 40 for i in range(n_groups * rows)]})
    pq.write_table(table, path, row_group_size=rows, compression=compression)
    return table


def test_not_parquet_and_truncated_parquet_are_quarantined(tmp_path):
    (tmp_path / "fake.parquet").write_bytes(b'{"text": "I am JSON"}\n')
    _parquet(tmp_path / "real.parquet")
    blob = (tmp_path / "real.parquet").read_bytes()
    (tmp_path / "short.parquet").write_bytes(blob[: len(blob) // 2])
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(tmp_path / "*.parquet"), "domain": "web"}])
    assert len(docs) == 150 and stats["kept"] == 150  # real.parquet, untouched
    by_src = {r["source"].rsplit("/", 1)[1]: r for r in rej}
    assert set(by_src) == {"fake.parquet#R0", "short.parquet#R0"}
    assert all(r["reason"] == "corrupt" for r in rej)
    assert by_src["fake.parquet#R0"]["raw"] == b'{"text": "I am JSON"}\n'  # recoverable by hand


def test_corrupt_row_group_loses_only_its_rows(tmp_path):
    path = tmp_path / "rg.parquet"
    table = _parquet(path)
    meta = pq.ParquetFile(path).metadata.row_group(1).column(0)
    start = meta.dictionary_page_offset or meta.data_page_offset
    data = bytearray(path.read_bytes())
    for i in range(start + 20, start + meta.total_compressed_size - 4):  # garble the middle group's pages
        data[i] = 0x5A
    path.write_bytes(bytes(data))
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(path), "domain": "web"}])
    texts = table.column("text").to_pylist()
    assert [d.text for d in docs] == texts[:50] + texts[100:]
    assert len(rej) == 1 and rej[0]["reason"] == "corrupt" and rej[0]["source"].endswith("rg.parquet#RG1")
    assert "rows 51-100" in rej[0]["detail"]


def test_parquet_columns_that_are_not_json_become_json(tmp_path):
    ts = dt.datetime(2024, 1, 2, 3, 4, 5)
    cols = {
        "text": ["a doc"],
        "ts": [ts],
        "blob": [b"\x00\xff"],
        "day": [dt.date(2024, 1, 2)],
        "took": [dt.timedelta(minutes=1, microseconds=500)],
        "price": pa.array([Decimal("1.50")]),
    }
    pq.write_table(pa.table(cols), tmp_path / "t.parquet")
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(tmp_path / "t.parquet"), "domain": "web"}])
    assert not rej and docs[0].meta == {
        "ts": "2024-01-02T03:04:05",
        "blob": "AP8=",
        "day": "2024-01-02",
        "took": 60.0005,
        "price": "1.50",
    }


def _unwritable(unit, cfg):
    yield Document("a", "fine", "web", "u#1")
    yield Document("b", "bad \ud800", "web", "u#2")  # cannot be UTF-8 encoded
    yield Document("c", "meta", "web", "u#3", {"x": {1, 2}})  # a set is not JSON
    yield Document("d", "fine too", "web", "u#4")
    return {"in": 4}


def test_unwritable_records_are_quarantined_not_fatal(tmp_path):
    stats = run_stage(_unwritable, [("k", None)], {}, tmp_path / "docs", tmp_path / "rej", LocalExecutor(1))
    assert [d.text for d in iter_documents(tmp_path / "docs")] == ["fine", "fine too"]
    rej = pq.read_table(tmp_path / "rej" / "part-00000-0000.parquet").to_pylist()
    assert [r["reason"] for r in rej] == ["unwritable", "unwritable"] and stats["rejected"] == 2
    assert json.loads(rej[0]["raw"])["text"] == "bad \ud800"  # the original survives, escaped
    assert "surrogate" in rej[0]["detail"] and "set" in rej[1]["detail"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
def test_bom_files_are_decoded(tmp_path, encoding):
    text = "Grüße aus Köln — ¿qué tal? 東京"
    (tmp_path / "a.txt").write_bytes(text.encode(encoding))
    (tmp_path / "b.jsonl").write_bytes(
        (json.dumps({"text": text}, ensure_ascii=False) + "\n").encode(encoding) * 2
    )
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(tmp_path / "*"), "domain": "web"}])
    assert [d.text for d in docs] == [text] * 3 and not rej
    # Python writes these BOMs little-endian
    want = {} if encoding == "utf-8-sig" else {"encoding": f"{encoding}-le"}
    assert all(d.meta == want for d in docs)


def test_legacy_encodings_are_detected_and_recorded(tmp_path):
    de = "Ein Stück Käse, im Latin-1-Format gespeichert. Größere Übungen für Mädchen und Jungen."
    fr = "L'élève a été très content de voir ça : où est la forêt ? Noël à Paris, c'est déjà l'été."
    ru = "Привет, как дела? Это тестовый текст на русском языке. Мы проверяем определение кодировки."
    (tmp_path / "de.txt").write_bytes(de.encode("latin-1"))
    (tmp_path / "fr.txt").write_bytes(fr.encode("cp1252"))
    (tmp_path / "ru.txt").write_bytes(ru.encode("cp1251"))
    (tmp_path / "blob.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (tmp_path / "short.txt").write_bytes(b"K\xe4se")  # four bytes: too little to tell
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(tmp_path / "*.txt"), "domain": "web"}])
    got = {d.source.rsplit("/", 1)[1]: d for d in docs}
    assert got["de.txt"].text == de and got["fr.txt"].text == fr and got["ru.txt"].text == ru
    assert got["fr.txt"].meta["encoding"] == "cp1252" and got["ru.txt"].meta["encoding"] == "cp1251"
    assert got["de.txt"].meta["encoding"] == "cp1252"  # identical text to latin-1 here; the common name
    assert {r["source"].rsplit("/", 1)[1]: r["reason"] for r in rej} == {
        "blob.txt": "binary",
        "short.txt": "undecodable",
    }
    assert "confidence" in {r["source"].rsplit("/", 1)[1]: r for r in rej}["short.txt"]["detail"]


def test_legacy_jsonl_lines_share_the_encoding_detected_on_an_earlier_line(tmp_path):
    long = "L'élève a été très content de voir ça : où est la forêt ? Noël à Paris, c'est déjà l'été."
    rows = [
        {"text": "plain ascii first"},
        {"text": long},
        {"text": "café"},
    ]  # 'café' alone is too short to detect
    data = b"".join(json.dumps(r, ensure_ascii=False).encode("cp1252") + b"\n" for r in rows)
    (tmp_path / "legacy.jsonl").write_bytes(data)
    (tmp_path / "alone.jsonl").write_bytes(json.dumps(rows[2], ensure_ascii=False).encode("cp1252") + b"\n")
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(tmp_path / "*.jsonl"), "domain": "web"}])
    assert [(d.text, d.meta) for d in docs] == [
        ("plain ascii first", {}),
        (long, {"encoding": "cp1252"}),
        ("café", {"encoding": "cp1252"}),
    ]
    assert [(r["reason"], r["source"].rsplit("/", 1)[1]) for r in rej] == [("undecodable", "alone.jsonl#L1")]


def test_truncated_text_keeps_the_complete_blocks_even_when_cut_mid_character(tmp_path):
    paras = [f"Absatz {i}: Grüße aus Köln, schöne Straße. " * 3 for i in range(300)]
    full = gzip.compress("\n\n".join(paras).encode())
    for size in range(len(full) // 2, len(full)):  # a cut whose decompressed prefix ends inside a character
        recovered = zlib.decompressobj(wbits=31).decompress(full[:size])
        try:
            recovered.decode()
        except UnicodeDecodeError:
            break
    (tmp_path / "cut.txt.gz").write_bytes(full[:size])
    (tmp_path / "whole.txt.gz").write_bytes(full[:size])
    stats, docs, rej = _run(
        tmp_path / "o",
        [
            {"uri": str(tmp_path / "cut.txt.gz"), "domain": "prose", "split": "paragraph"},
            {"uri": str(tmp_path / "whole.txt.gz"), "domain": "prose", "split": "file"},
        ],
    )
    complete = recovered[: recovered.rindex(b"\n") + 1].decode()
    blocks = [b for b in complete.split("\n\n") if b.strip()]
    assert [d.text for d in docs] == blocks[:-1] == paras[: len(blocks) - 1]
    assert [(r["reason"], r["source"].rsplit("/", 1)[1]) for r in rej] == [
        ("truncated", f"cut.txt.gz#L{2 * len(blocks) - 1}"),
        ("truncated", "whole.txt.gz"),
    ]
    assert rej[0]["raw"] == recovered[len("\n\n".join(paras[: len(blocks) - 1]).encode()) + 2 :]
    assert rej[1]["raw"] == recovered
