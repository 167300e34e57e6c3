import hashlib
import json

import pyarrow.parquet as pq
import pytest

from lmpipe.documents import (
    REJECT_SCHEMA,
    Document,
    Rejected,
    ShardWriter,
    iter_documents,
    read_manifest,
    write_manifest,
)


def _docs(n):
    return [Document(f"d{i}", f"text nº {i} — ünïcode", "prose", f"src#{i}", {"i": i, "tags": ["a"]}) for i in range(n)]


def test_shards_roll_and_manifest_matches_files(tmp_path):
    docs = _docs(25)
    with ShardWriter(tmp_path, "part", docs_per_shard=10, row_group=4) as w:
        w.write_all(docs)
    m = write_manifest(tmp_path, w.shards)
    assert [s["docs"] for s in m["shards"]] == [10, 10, 5]
    assert m["docs"] == 25
    assert m["text_bytes"] == sum(len(d.text.encode()) for d in docs)
    for s in m["shards"]:
        f = tmp_path / s["path"]
        assert s["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert pq.ParquetFile(f).metadata.num_rows == s["docs"]
    assert read_manifest(tmp_path)["sha256"] == m["sha256"]
    back = list(iter_documents(tmp_path, batch_size=3))
    assert back == docs  # order, text, meta all preserved


def test_failed_writer_leaves_no_partial_shard(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, "part", docs_per_shard=10, row_group=2) as w:
        w.write_all(_docs(3))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_rejected_keeps_raw_bytes(tmp_path):
    doc = Document("x", "", "web", "f#L1", {})
    with ShardWriter(tmp_path, "rej", REJECT_SCHEMA) as w:
        w.write(Rejected(doc, "invalid_utf8", "byte 3", b"ab\xffcd"))
    row = pq.read_table(tmp_path / "rej-0000.parquet").to_pylist()[0]
    assert row["raw"] == b"ab\xffcd" and row["text"] is None and row["reason"] == "invalid_utf8"


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not an lmpipe dataset"):
        list(iter_documents(tmp_path))


def test_meta_roundtrip_is_json(tmp_path):
    d = Document("a", "t", "code", "s", {"nested": {"k": [1, 2]}})
    assert json.loads(d.to_row()["meta"]) == {"nested": {"k": [1, 2]}}
