"""Fuzz: randomly mutated files of every supported format never crash ingestion, and counts are conserved.

Seed files are generated per format (jsonl, jsonl.gz, json, parquet, parquet.gz, txt, txt.gz) in several
encodings, then mutated at random (seeded): truncation, bit flips, overwritten / inserted / deleted /
duplicated ranges, gzip applied before or after the damage, content saved under another format's
extension, whole files re-encoded. Every file is read through the real planner and unit reader; then the
whole folder goes through the ``ingest`` stage once (grouped units, real Parquet writing).

The quick run (150 files per format, 1,050 in all) is part of every test run; the full one (1,000 per format)
is marked ``e2e``. ``LMPIPE_FUZZ_SEED`` picks another seed, ``LMPIPE_FUZZ_FILES`` the quick run's files per format.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import time
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmpipe.documents import Document, Rejected, iter_batches, iter_documents
from lmpipe.executors import LocalExecutor
from lmpipe.formats import read_unit
from lmpipe.ingest import ingest
from lmpipe.ingest_config import IngestConfig, SourceConfig
from lmpipe.sources import plan_units

SEED = int(os.environ.get("LMPIPE_FUZZ_SEED", "20261203"))
QUICK = int(os.environ.get("LMPIPE_FUZZ_FILES", "150"))  # x 7 formats: 1,050 files, ~10 s on 2 busy cores
FULL = 1000  # per format: 7,000 files, ~70 s
FORMATS = ("jsonl", "jsonl.gz", "json", "parquet", "parquet.gz", "txt", "txt.gz")
REASONS = {
    "binary",
    "undecodable",
    "malformed_json",
    "lone_surrogate",
    "missing_text",
    "empty",
    "oversize",
    "truncated",
    "corrupt",
    "unwritable",
}
SPLITS = ("file", "paragraph", "line", "heading")
ENCODINGS = (
    "utf-8",
    "utf-8",
    "utf-8",
    "utf-8-sig",
    "utf-16",
    "utf-32",
    "cp1252",
    "cp1251",
    "shift_jis",
    "gbk",
)
SAMPLES = [
    "Plain English prose about rivers, mountains and the weather in early spring.",
    "L'élève a été très content de voir ça : où est la forêt ? Noël à Paris, c'est déjà l'été.",
    "Привет, как дела? Это тестовый текст на русском языке. Мы проверяем кодировки.",
    "これは日本語のテキストです。エンコーディングの検出をテストします。",
    "这是一个中文文本，用于测试编码检测功能是否正常工作。北京是中国的首都。",
    "def f(x):\n    return x * 2  # code with\ttabs\n",
    " = Heading = \nSome text under a heading.\n# Markdown title\nMore text.",
    "",
    "   ",
]


def _texts(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choice(SAMPLES) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def _jsonl(rng: random.Random, encoding: str) -> bytes:
    lines = []
    for i, text in enumerate(_texts(rng, rng.randint(1, 30))):
        rec = {"text": text, "n": i}
        if rng.random() < 0.1:
            rec = {"body": text}  # missing text field
        line = json.dumps(rec, ensure_ascii=rng.random() < 0.3)
        if rng.random() < 0.1:
            line = line.replace('"text": "', '"text": "\\ud800', 1)  # a lone surrogate escape
        lines.append(line)
    data = "\n".join(lines) + "\n"
    return data.encode(encoding, "replace") if encoding != "utf-8-sig" else data.encode(encoding)


def _txt(rng: random.Random, encoding: str) -> bytes:
    paras = _texts(rng, rng.randint(1, 12))
    return "\n\n".join(paras).encode(encoding, "replace")


def _parquet(rng: random.Random) -> bytes:
    n = rng.randint(1, 40)
    table = pa.table(
        {
            "text": _texts(rng, n),
            "i": list(range(n)),
            "blob": [bytes(rng.randrange(256) for _ in range(4)) for _ in range(n)],
            "tags": [["a", "b"][: rng.randint(0, 2)] for _ in range(n)],
        }
    )
    buf = io.BytesIO()
    pq.write_table(
        table,
        buf,
        row_group_size=rng.randint(1, 10),
        compression=rng.choice(["zstd", "snappy", "gzip", "none"]),
    )
    return buf.getvalue()


def _seed(rng: random.Random, fmt: str) -> bytes:
    base = fmt.removesuffix(".gz")
    if base == "parquet":
        return _parquet(rng)
    enc = rng.choice(ENCODINGS)
    return _jsonl(rng, enc) if base in ("jsonl", "json") else _txt(rng, enc)


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(7)
        if not b:
            b.extend(rng.randbytes(rng.randint(1, 64)))
        elif op == 0:  # truncate
            del b[rng.randrange(len(b)) :]
        elif op == 1:  # bit flips
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 2:  # overwrite a range with random bytes
            i = rng.randrange(len(b))
            b[i : i + rng.randint(1, 32)] = rng.randbytes(rng.randint(1, 32))
        elif op == 3:  # insert
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 4:  # delete a range
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 64)]
        elif op == 5:  # duplicate a range
            i = rng.randrange(len(b))
            b[i:i] = b[i : i + rng.randint(1, 256)]
        else:  # zero a range
            i = rng.randrange(len(b))
            n = min(len(b) - i, rng.randint(1, 64))
            b[i : i + n] = bytes(n)
    return bytes(b)


def _make_file(rng: random.Random, fmt: str) -> tuple[bytes, str]:
    """Mutated bytes, and what was done (for the failure message)."""
    kind = rng.choice(["content", "content", "stream", "wrong_ext", "reencode", "pristine"])
    src_fmt = rng.choice(FORMATS) if kind == "wrong_ext" else fmt
    data = _seed(rng, src_fmt)
    gz = fmt.endswith(".gz")
    if kind == "reencode" and not src_fmt.startswith("parquet"):
        data = data.decode("utf-8", "replace").encode(rng.choice(ENCODINGS), "replace")
    if kind in ("content", "reencode", "wrong_ext"):
        data = _mutate(rng, data)
    if src_fmt.endswith(".gz") and not gz:  # gzip content under a plain name: leave it compressed
        data = gzip.compress(data, mtime=0)
    elif gz:
        data = gzip.compress(data, mtime=0)
        if kind == "stream":
            data = _mutate(rng, data)
    elif kind == "stream":
        data = _mutate(rng, data)
    return data, f"{kind} from {src_fmt}"


def _consume(group, cfg) -> tuple[list, dict]:
    gen = read_unit(group, cfg)
    items = []
    while True:
        try:
            items.append(next(gen))
        except StopIteration as stop:
            return items, stop.value


@pytest.mark.parametrize(
    "files_per_format", [QUICK, pytest.param(FULL, marks=pytest.mark.e2e)], ids=["quick", "full"]
)
def test_mutated_files_never_crash_ingest_and_conserve_counts(tmp_path, files_per_format):
    rng = random.Random(SEED)
    # both answers to a lone surrogate: the quick run quarantines, the full run replaces
    knobs = {
        "max_chars": 2000,
        "min_chars": 1,
        "surrogates": "quarantine" if files_per_format == QUICK else "replace",
    }
    cfg = IngestConfig(sources=[{"uri": str(tmp_path), "domain": "web"}], **knobs)
    started = time.perf_counter()
    reasons: Counter[str] = Counter()
    per_format: Counter[str] = Counter()
    records = kept = 0
    dirs = {}
    for fmt in FORMATS:
        for split in SPLITS if fmt.startswith("txt") else ("file",):
            d = tmp_path / "fuzz" / f"{fmt.replace('.', '_')}-{split}"
            d.mkdir(parents=True)
            dirs[d] = split
    for fmt in FORMATS:
        fmt_dirs = [d for d in dirs if d.name.startswith(fmt.replace(".", "_") + "-")]
        for i in range(files_per_format):
            d = rng.choice(fmt_dirs)
            path = d / f"f{i:05d}.{fmt}"
            data, how = _make_file(rng, fmt)
            path.write_bytes(data)
            src = SourceConfig(uri=str(path), domain="web", split=dirs[d])
            ((_, group),) = plan_units(src)
            try:
                items, ret = _consume(group, cfg)
            except Exception as e:  # noqa: BLE001 - the point of the test: name the file that crashed
                raise AssertionError(
                    f"{path.name} ({how}, split={dirs[d]}) crashed: {type(e).__name__}: {e}"
                ) from e
            assert ret == {"in": len(items)}, path.name
            if how.startswith("pristine"):  # undamaged input has no stream or container fault
                assert not {"corrupt", "truncated"} & {getattr(x, "reason", "") for x in items}, (
                    path.name,
                    how,
                )
            for item in items:
                if isinstance(item, Rejected):
                    assert item.reason in REASONS and item.detail, (path.name, how, item.reason)
                    reasons[item.reason] += 1
                else:
                    assert isinstance(item, Document) and isinstance(item.text, str), (path.name, how)
                    kept += 1
            records += len(items)
            per_format[fmt] += 1
    direct = time.perf_counter() - started

    # the whole folder through the stage: grouped units, real writing, per-unit conservation
    sources = [{"uri": str(d), "domain": "web", "split": split} for d, split in dirs.items()]
    cfg = IngestConfig(sources=sources, group_mib=1, **knobs)
    stats = ingest(cfg, tmp_path / "docs", tmp_path / "rej", LocalExecutor(1))
    staged = time.perf_counter() - started - direct
    assert stats["in"] == stats["kept"] + stats["rejected"] == records
    assert stats["kept"] == kept and stats["by_reason"] == dict(sorted(reasons.items()))
    assert sum(1 for _ in iter_documents(tmp_path / "docs")) == kept
    rej = [r for b in iter_batches(tmp_path / "rej", ["reason", "detail"]) for r in b.to_pylist()]
    assert len(rej) == sum(reasons.values()) and all(r["reason"] and r["detail"] for r in rej)

    assert all(per_format[f] == files_per_format for f in FORMATS)
    # the mutations reach every kind of fault, and plenty of records survive them
    faults = {"truncated", "corrupt", "malformed_json", "undecodable", "binary"}
    assert faults | ({"lone_surrogate"} if cfg.surrogates == "quarantine" else set()) <= set(reasons), reasons
    assert kept > records / 4, (kept, records)
    print(
        f"\nfuzz seed={SEED}: {sum(per_format.values())} files ({files_per_format} per format), {records} records "
        f"({kept} kept), reasons {dict(reasons)}; direct reads {direct:.1f}s, stage {staged:.1f}s"
    )
