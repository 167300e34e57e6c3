"""The shard runner's per-unit guard: a unit that loses a record fails by name and is never marked done."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmpipe.documents import Document, Rejected, iter_documents
from lmpipe.executors import LocalExecutor
from lmpipe.sharded import ConservationError, Held, run_stage


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
    again = _run(tmp_path, lossy="")
    assert (stats.pop("units_reused"), again.pop("units_reused")) == (0, 3)
    assert again == stats
    assert [m.stat().st_mtime_ns for m in markers] == before  # every unit reused, none recomputed


def holding(unit: str, lost: str) -> Iterator[Document | Rejected | Held]:
    """Three records per unit: one kept, one rejected, one held out; unit ``lost`` drops the held one."""
    docs = [Document(f"{unit}-{k}", f"text {k}", "prose", unit) for k in range(3)]
    yield docs[0]
    yield Rejected(docs[1], "short", "too short")
    if unit != lost:
        yield Held(docs[2])
    return {"in": 3}


def _run_held(tmp_path: Path, lost: str = "") -> dict:
    return run_stage(holding, UNITS, lost, tmp_path / "docs", tmp_path / "rejected", LocalExecutor(1),
                     state_dir=tmp_path / "state", held_dir=tmp_path / "held")


def test_held_documents_are_a_third_conserved_output_that_resumes(tmp_path: Path) -> None:
    stats = _run_held(tmp_path)
    assert (stats["in"], stats["kept"], stats["rejected"], stats["held"]) == (9, 3, 3, 3)
    assert stats["held_by_domain"] == {"prose": 3}
    assert sorted(d.id for d in iter_documents(tmp_path / "held")) == ["a-2", "b-2", "c-2"]
    assert sorted(d.id for d in iter_documents(tmp_path / "docs")) == ["a-0", "b-0", "c-0"]
    assert _run_held(tmp_path)["units_reused"] == 3
    next((tmp_path / "held").glob("part-00001-*.parquet")).unlink()  # a held shard lost after its marker
    again = _run_held(tmp_path)
    assert again["units_reused"] == 2 and sorted(d.id for d in iter_documents(tmp_path / "held"))[1] == "b-2"
    with pytest.raises(ConservationError, match=r"unit 0 \(key-a\): in=3 != kept=1 \+ rejected=1 \+ held=0"):
        _run_held(tmp_path / "lossy", lost="a")
    with pytest.raises(TypeError, match="no held_dir"):  # a stage that diverts must say where to
        run_stage(holding, UNITS, "", tmp_path / "d", tmp_path / "r", LocalExecutor(1), state_dir=tmp_path / "s")
