"""Ingestion from every supported source and format, and quarantine of every bad-input kind."""

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmpipe.documents import iter_documents, read_manifest
from lmpipe.executors import LocalExecutor
from lmpipe.ingest import ingest
from lmpipe.ingest_config import IngestConfig
from lmpipe.sources import SourceError


def _run(tmp_path, sources, **kw):
    cfg = IngestConfig(sources=sources, **kw)
    stats = ingest(cfg, tmp_path / "docs", tmp_path / "rej", LocalExecutor(1))
    docs = list(iter_documents(tmp_path / "docs"))
    rej = [r for f in sorted((tmp_path / "rej").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    return stats, docs, rej


def test_formats_and_splits(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [{"text": f"doc {i}", "lang": "en"} for i in range(3)]
    (raw / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (raw / "b.jsonl.gz").write_bytes(gzip.compress(b'{"body": "gz doc"}\n'))
    pq.write_table(pa.table({"content": ["pq one", "pq two"], "n": [1, 2]}), raw / "c.parquet")
    (raw / "d.txt").write_text("para one\nstill one\n\n\npara two\n")
    (raw / "e.txt").write_text(" = Alpha = \n text a \n = = sub = = \n more a \n = Beta = \n text b \n")
    stats, docs, rej = _run(tmp_path / "o", [
        {"uri": str(raw / "a.jsonl"), "domain": "web"},
        {"uri": str(raw / "b.jsonl.gz"), "domain": "web", "text_field": "body"},
        {"uri": str(raw / "c.parquet"), "domain": "code", "text_field": "content"},
        {"uri": str(raw / "d.txt"), "domain": "prose", "split": "paragraph"},
        {"uri": str(raw / "e.txt"), "domain": "prose", "split": "heading"},
    ])
    texts = [d.text for d in docs]
    assert texts == ["doc 0", "doc 1", "doc 2", "gz doc", "pq one", "pq two", "para one\nstill one", "para two",
                     " = Alpha = \n text a \n = = sub = = \n more a ", " = Beta = \n text b "]
    assert docs[0].meta == {"lang": "en"} and docs[4].meta == {"n": 1}
    assert [d.domain for d in docs[4:6]] == ["code", "code"]
    assert len({d.id for d in docs}) == len(docs)
    assert stats["in"] == 10 and stats["rejected"] == 0 and not rej


def test_every_bad_kind_is_quarantined_with_reason_and_raw_bytes(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    lines = [
        b'{"text": "fine"}',
        b'{"text": "unterminated}',
        b'[1, 2]',
        b'{"other": "x"}',
        b'{"text": "caf\xe9"}',
        b'{"text": "   "}',
        b'{"text": "' + b"x" * 200 + b'"}',
        b'{"text": "nul \\u0000 inside"}',
    ]
    (raw / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (raw / "blob.txt").write_bytes(bytes(range(256)) * 8)
    (raw / "latin.txt").write_bytes("Käse".encode("latin-1"))
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(raw / "*"), "domain": "web"}], max_chars=100)
    assert [d.text for d in docs] == ["fine"]
    by_reason = {}
    for r in rej:
        by_reason.setdefault(r["reason"], []).append(r)
    assert {k: len(v) for k, v in by_reason.items()} == {
        "malformed_json": 2, "missing_text": 1, "undecodable": 2, "empty": 1, "oversize": 1, "binary": 2}
    assert stats["in"] == stats["kept"] + stats["rejected"] == 10
    assert by_reason["undecodable"][0]["raw"] in (lines[4], "Käse".encode("latin-1"))
    assert {r["raw"] for r in by_reason["malformed_json"]} == {lines[1], lines[2]}
    assert all(r["detail"] for r in rej)  # every quarantined record says why
    assert read_manifest(tmp_path / "o" / "rej")["docs"] == 9


def test_hf_saved_dataset(tmp_path):
    from datasets import Dataset

    Dataset.from_dict({"text": ["hf a", "hf b", ""], "label": [0, 1, 2]}).save_to_disk(tmp_path / "hf")
    stats, docs, rej = _run(tmp_path / "o", [{"uri": str(tmp_path / "hf"), "domain": "web"}])
    assert [d.text for d in docs] == ["hf a", "hf b"] and docs[1].meta == {"label": 1}
    assert [r["reason"] for r in rej] == ["empty"]


def test_no_match_is_a_clear_error(tmp_path):
    with pytest.raises(SourceError, match="matched no files"):
        _run(tmp_path, [{"uri": str(tmp_path / "nothing*.jsonl"), "domain": "web"}])


def test_s3_round_trip_through_local_server(tmp_path, s3_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="corpus")
    local = tmp_path / "local"
    local.mkdir()
    for i in range(3):
        body = "".join(json.dumps({"text": f"s3 doc {i}-{j}"}) + "\n" for j in range(4)).encode()
        s3.put_object(Bucket="corpus", Key=f"raw/part{i}.jsonl", Body=body)
        (local / f"part{i}.jsonl").write_bytes(body)
    s3.put_object(Bucket="corpus", Key="raw/broken.jsonl", Body=b"{nope\n")
    stats, docs, rej = _run(tmp_path / "s3", [{"uri": "s3://corpus/raw/*.jsonl", "domain": "web",
                                               "endpoint_url": s3_server}])
    _, local_docs, _ = _run(tmp_path / "loc", [{"uri": str(local / "part*.jsonl"), "domain": "web"}])
    assert [d.text for d in docs] == [d.text for d in local_docs] and len(docs) == 12
    assert docs[0].source == "s3://corpus/raw/part0.jsonl#L1"
    assert [r["reason"] for r in rej] == ["malformed_json"]
