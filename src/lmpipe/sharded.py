"""Resumable, executor-agnostic processing of work units into kept + rejected datasets.

A stage describes its work as ``units`` (an input file, a shard of an upstream dataset, ...) and a
top-level ``process(unit, params)`` generator that yields ``Document`` (kept) or ``Rejected`` items and
may *return* ``{"in": n}``, the number of input records it read. Each unit writes its own shards
(``part-<unit>-<k>.parquet``) and, once complete, a marker ``<state_dir>/<unit>.json`` holding its stats
and a fingerprint of (params, unit). The state directory sits beside the outputs, not inside them, so an
output's DVC hash depends on its data alone. A rerun after a crash skips every unit whose marker matches, so a
killed run resumes and produces byte-identical output; ``finalize`` then writes the manifests in unit
order and deletes shards no unit owns (left over from older params).

A stage may also divert documents to a third dataset, ``held_dir`` (a held-out sample that must never reach
training: ``process`` yields them wrapped in :class:`Held`); then ``in == kept + rejected + held``.

Counts are conserved: for every unit ``in == kept + rejected (+ held)`` or the stage fails. A record that no Parquet
row can hold (text that is not valid Unicode, meta that is not JSON) is quarantined as ``unwritable``, with
the original escaped in ``raw``, rather than failing the unit.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lmpipe.documents import (
    REJECT_SCHEMA,
    Document,
    Rejected,
    ShardInfo,
    ShardWriter,
    UnwritableError,
    as_writable_rejection,
    read_manifest,
    write_manifest,
)
from lmpipe.executors import Executor

Process = Callable[[Any, Any], Iterator["Document | Rejected | Held"]]


class ConservationError(RuntimeError):
    """A unit's input count differs from kept + rejected (+ held): a record would have been lost."""


@dataclass(slots=True)
class Held:
    """A document ``process`` diverts to the stage's ``held_dir`` instead of its kept output."""

    doc: Document


@dataclass
class UnitTask:
    index: int
    unit: Any
    key: str  # identifies the unit's input (path + size + mtime, or an upstream shard hash)
    process: Process
    params: Any
    kept_dir: str
    rejected_dir: str
    state_dir: str
    docs_per_shard: int
    fingerprint: str
    held_dir: str | None = None


def dataset_units(directory: str | Path) -> list[tuple[str, str]]:
    """One ``(key, shard path)`` unit per shard of an upstream dataset; the key is the shard's SHA-256."""
    directory = Path(directory)
    return [(s["sha256"], str(directory / s["path"])) for s in read_manifest(directory)["shards"]]


def fingerprint(params: Any, key: str) -> str:
    payload = params.model_dump_json() if hasattr(params, "model_dump_json") else json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(f"{payload}\0{key}".encode()).hexdigest()[:32]


def _marker(task: UnitTask) -> Path:
    return Path(task.state_dir) / f"{task.index:05d}.json"


def read_marker(path: Path, fingerprint: str) -> dict | None:
    """A unit's completion marker, if one was written for exactly this ``fingerprint`` (params + input)."""
    if not path.exists():
        return None
    done = json.loads(path.read_text())
    return done if done.get("fingerprint") == fingerprint else None


def files_intact(files: Iterable[tuple[Path, int]]) -> bool:
    """Every ``(path, size)`` a marker promises is on disk at that size (a crash can leave a marker's outputs
    half-deleted by a later cleanup, never half-written: outputs are renamed into place before the marker)."""
    return all(p.exists() and p.stat().st_size == size for p, size in files)


def write_marker(path: Path, result: dict) -> None:
    """Atomically record a finished unit; written last, after all its outputs are in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)


def _load_done(task: UnitTask) -> dict | None:
    done = read_marker(_marker(task), task.fingerprint)
    if done is None:
        return None
    files = [(Path(base) / s["path"], s["file_bytes"])
             for kind, base in _outputs(task)
             for s in done.get(f"{kind}_shards", [])]
    return done if files_intact(files) else None


def _outputs(task: UnitTask) -> list[tuple[str, str]]:
    out = [("kept", task.kept_dir), ("rejected", task.rejected_dir)]
    return out + ([("held", task.held_dir)] if task.held_dir else [])


def run_unit(task: UnitTask) -> dict:
    """Process one unit (or reuse its completed result). Top-level so every executor can pickle it."""
    done = _load_done(task)
    if done is not None:
        return {**done, "reused": True}
    prefix = f"part-{task.index:05d}"
    kept = ShardWriter(task.kept_dir, prefix, docs_per_shard=task.docs_per_shard)
    rejected = ShardWriter(task.rejected_dir, prefix, REJECT_SCHEMA, docs_per_shard=task.docs_per_shard)
    held = ShardWriter(task.held_dir, prefix, docs_per_shard=task.docs_per_shard) if task.held_dir else None
    reasons: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    held_domains: Counter[str] = Counter()
    n_kept = 0
    gen = task.process(task.unit, task.params)
    with kept, rejected, held if held is not None else nullcontext():
        while True:
            try:
                item = next(gen)
            except StopIteration as stop:
                extra = stop.value or {}
                break
            if isinstance(item, Held):
                if held is None:
                    raise TypeError(f"unit {task.index}: process diverted a document but the stage has no held_dir")
                try:
                    held.write(item.doc)
                    held_domains[item.doc.domain] += 1
                    continue
                except UnwritableError as e:
                    item = as_writable_rejection(item.doc, e)
            try:
                (rejected if isinstance(item, Rejected) else kept).write(item)
            except UnwritableError as e:  # quarantined, escaped, instead of failing the unit
                item = as_writable_rejection(item, e)
                rejected.write(item)
            if isinstance(item, Rejected):
                reasons[item.reason] += 1
            else:
                domains[item.domain] += 1
                n_kept += 1
    n_rej, n_held = sum(reasons.values()), sum(held_domains.values())
    n_in = extra.get("in", n_kept + n_rej + n_held)
    if n_in != n_kept + n_rej + n_held:
        raise ConservationError(f"unit {task.index} ({task.key}): in={n_in} != kept={n_kept} + rejected={n_rej}"
                                + (f" + held={n_held}" if held is not None else ""))
    result = {
        "index": task.index,
        "key": task.key,
        "fingerprint": task.fingerprint,
        "in": n_in,
        "kept": n_kept,
        "rejected": n_rej,
        "by_reason": dict(sorted(reasons.items())),
        "by_domain": dict(sorted(domains.items())),
        "kept_shards": [asdict(s) for s in kept.shards],
        "rejected_shards": [asdict(s) for s in rejected.shards],
        **({"held": n_held, "held_by_domain": dict(sorted(held_domains.items())),
            "held_shards": [asdict(s) for s in held.shards]} if held is not None else {}),
        **{k: v for k, v in extra.items() if k != "in"},
    }
    write_marker(_marker(task), result)
    return result


def run_stage(
    process: Process,
    units: list[tuple[str, Any]],
    params: Any,
    kept_dir: str | Path,
    rejected_dir: str | Path,
    executor: Executor,
    docs_per_shard: int = 5000,
    desc: str = "",
    state_dir: str | Path | None = None,
    extras: tuple[str, ...] = (),
    held_dir: str | Path | None = None,
) -> dict:
    """Run ``process`` over ``units`` (``(key, unit)`` pairs) and return the stage stats.

    ``state_dir`` (default: ``.state/<kept_dir name>`` beside ``kept_dir``) holds the resume markers. Each
    name in ``extras`` is a dict of counts a unit returned; the stats hold its sum over all units
    (``<name>``) and over the units processed in this run, not reused from a marker (``<name>_this_run``).
    ``held_dir``: the dataset of documents ``process`` yields as :class:`Held` (stats ``held``, ``held_by_domain``).
    """
    kept_dir, rejected_dir = Path(kept_dir), Path(rejected_dir)
    held = Path(held_dir) if held_dir is not None else None
    state = Path(state_dir) if state_dir else kept_dir.parent / ".state" / kept_dir.name
    for d in (kept_dir, rejected_dir, state, *([held] if held else [])):
        d.mkdir(parents=True, exist_ok=True)
    tasks = [
        UnitTask(
            i, unit, key, process, params, str(kept_dir), str(rejected_dir), str(state),
            docs_per_shard, fingerprint(params, key), str(held) if held else None,
        )
        for i, (key, unit) in enumerate(units)
    ]
    results = executor.map(run_unit, tasks, desc=desc)
    stats = finalize(results, kept_dir, rejected_dir, state, held)
    stats["units_reused"] = sum(bool(r.get("reused")) for r in results)
    for name in extras:
        stats[name] = sum_counts(r.get(name, {}) for r in results)
        stats[f"{name}_this_run"] = sum_counts(r.get(name, {}) for r in results if not r.get("reused"))
    return stats


def sum_counts(dicts: Iterable[dict[str, float]]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(sorted(total.items()))


def finalize(results: list[dict], kept_dir: Path, rejected_dir: Path, state_dir: Path,
             held_dir: Path | None = None) -> dict:
    """Write the manifests in unit order, remove orphans, and sum the stats."""
    stats: dict[str, Any] = {"units": len(results), "in": 0, "kept": 0, "rejected": 0}
    reasons: Counter[str] = Counter()
    domains: Counter[str] = Counter()
    held_domains: Counter[str] = Counter()
    for r in results:
        for k in ("in", "kept", "rejected"):
            stats[k] += r[k]
        reasons.update(r["by_reason"])
        domains.update(r["by_domain"])
        held_domains.update(r.get("held_by_domain", {}))
    n_held = sum(held_domains.values())
    if stats["in"] != stats["kept"] + stats["rejected"] + n_held:
        raise ConservationError(f"in={stats['in']} != kept={stats['kept']} + rejected={stats['rejected']}"
                                + (f" + held={n_held}" if held_dir is not None else ""))
    if held_dir is not None:
        stats["held"], stats["held_by_domain"] = n_held, dict(sorted(held_domains.items()))
    stats["by_reason"] = dict(sorted(reasons.items()))
    stats["kept_by_domain"] = dict(sorted(domains.items()))
    live_markers = {f"{r['index']:05d}.json" for r in results}
    outputs = [("kept", kept_dir), ("rejected", rejected_dir), *([("held", held_dir)] if held_dir else [])]
    for kind, base in outputs:
        shards = [ShardInfo(**s) for r in results for s in r.get(f"{kind}_shards", [])]
        owned = {s.path for s in shards}
        for f in base.glob("*.parquet"):
            if f.name not in owned:
                f.unlink()
        for f in base.glob(".*.tmp"):
            f.unlink()
        write_manifest(base, shards)
    for f in state_dir.glob("*.json"):
        if f.name not in live_markers:
            f.unlink()
    return stats
