"""The shard runner's per-unit guard: a unit that loses a record fails by name and is never marked done."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmpipe.documents import Document, Rejected, iter_documents
from lmpipe.executors import LocalExecutor
from lmpipe.sharded import ConservationError, run_stage


def process(unit: str, lossy: str) -> Iterator[Document | Rejected]:
    """Three records per unit: two kept, one rejected; unit ``lossy`` silently drops its second record."""
    records = [Document(f"{unit}-{k}", f"text {k}", "prose", unit) for k in range(3)]
    for k, doc in enumerate(records):
        if unit == lossy and k == 1:
            continue  # the bug under test: read, but neither kept nor rejected
        yield Rejected(doc, "short", "too short") if k == 2 else doc
    return {"in": len(records)}


UNITS = [("key-a", "a"), ("key-b", "b"), ("key-c", "c")]


def _run(tmp_path: Path, lossy: str) -> dict:
    return run_stage(
        process,
        UNITS,
        lossy,
        tmp_path / "docs",
        tmp_path / "rejected",
        LocalExecutor(1),
        state_dir=tmp_path / "state",
    )


def test_a_unit_that_loses_a_record_fails_naming_it_and_leaves_no_marker(tmp_path: Path) -> None:
    with pytest.raises(ConservationError, match=r"unit 1 \(key-b\): in=3 != kept=1 \+ rejected=1"):
        _run(tmp_path, lossy="b")
    assert sorted(p.name for p in (tmp_path / "state").glob("*.json")) == ["00000.json"]  # unit a only
    # a rerun does not reuse the lossy unit: it fails again, by name
    with pytest.raises(ConservationError, match=r"unit 1 \(key-b\)"):
        _run(tmp_path, lossy="b")
    assert not (tmp_path / "state" / "00001.json").exists()


def test_conserving_units_complete_and_are_reused(tmp_path: Path) -> None:
    stats = _run(tmp_path, lossy="")
    assert (stats["in"], stats["kept"], stats["rejected"]) == (9, 6, 3)
    assert sorted(d.id for d in iter_documents(tmp_path / "docs")) == [
        f"{u}-{k}" for u in "abc" for k in (0, 1)
    ]
    markers = sorted((tmp_path / "state").glob("*.json"))
    assert [json.loads(m.read_text())["key"] for m in markers] == ["key-a", "key-b", "key-c"]
    before = [m.stat().st_mtime_ns for m in markers]
    assert _run(tmp_path, lossy="") == stats
    assert [m.stat().st_mtime_ns for m in markers] == before  # every unit reused, none recomputed
