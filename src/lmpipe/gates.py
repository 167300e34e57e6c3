"""Data-quality gates: great-expectations suites run on a data stage's output; a failure stops the stage.

Two suites per gate, both validated in memory with great-expectations 1.x (no file context):

* ``<stage>.dataset`` on a one-row frame of statistics streamed over the *whole* dataset (ids, domains,
  text lengths, shard schemas: column reads, never the corpus in memory) and the stage's own stats dict:
  document count, no null or duplicate ids, no null texts, every text length within bounds, only allowed
  domains, every shard with the expected schema, ``in == kept + rejected (+ held out)``, and each rule's drop fraction
  (``by_reason[rule] / in``) within its configured bounds.
* ``<stage>.sample`` on a bounded, evenly spaced sample of rows with all their columns: the exact column
  list (no unexpected schema change), non-null unique ids, text lengths, allowed domains, JSON ``meta``.

``check`` writes ``reports/gates/<stage>/index.html`` (a self-contained page: every expectation, pass or
fail, with its observed value) and ``results.json``, returns a summary for the stage's metrics, and raises
``GateError`` listing the failed expectations. great-expectations is imported lazily (it costs ~3 s).
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from lmpipe.documents import DOC_SCHEMA, read_manifest, shard_paths
from lmpipe.gates_config import GatesConfig, StageGateConfig


class GateError(RuntimeError):
    """A gate failed; the message lists every failed expectation and where the report is."""

    def __init__(self, message: str, summary: dict | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}  # what ``check`` would have returned, for the stage's metrics


# ----------------------------------------------------------------------------------------- profile
def profile(docs_dir: str | Path, gate: StageGateConfig, domains: list[str], sample_docs: int,
            expected_columns: list[str]) -> tuple[dict[str, Any], pa.Table]:
    """Stream the dataset once: whole-dataset counts, and an evenly spaced sample of at most ``sample_docs`` rows."""
    docs_dir = Path(docs_dir)
    n = int(read_manifest(docs_dir)["docs"])
    stride = max(1, math.ceil(n / sample_docs)) if n else 1
    files = shard_paths(docs_dir)
    schema_mismatch = sum(1 for f in files if pq.read_schema(f).names != expected_columns)
    id_hashes: list[np.ndarray] = []
    counts: Counter[str] = Counter()
    seen_domains: Counter[str] = Counter()
    lengths = [math.inf, 0]
    sample: list[pa.Table] = []
    row = 0
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=2000):
            ids, text, domain = batch.column("id"), batch.column("text"), batch.column("domain")
            counts["null_ids"] += ids.null_count
            counts["null_texts"] += text.null_count
            id_hashes.append(np.fromiter((xxhash.xxh3_64_intdigest(i.encode()) for i in ids.to_pylist() if i),
                                         dtype=np.uint64))
            chars = pc.utf8_length(text.fill_null(""))
            counts["too_short"] += pc.sum(pc.less(chars, gate.min_chars)).as_py() or 0
            counts["too_long"] += pc.sum(pc.greater(chars, gate.max_chars)).as_py() or 0
            if len(chars):
                mm = pc.min_max(chars).as_py()
                lengths = [min(lengths[0], mm["min"]), max(lengths[1], mm["max"])]
            seen_domains.update(domain.fill_null("<null>").to_pylist())
            take = [i for i in range(len(batch)) if (row + i) % stride == 0]
            if take and sum(len(t) for t in sample) < sample_docs:
                sample.append(pa.Table.from_batches([batch]).take(pa.array(take)))
            row += len(batch)
    hashes = np.concatenate(id_hashes) if id_hashes else np.zeros(0, np.uint64)
    allowed = set(domains)
    stats = {
        "docs": n,
        "rows_read": row,
        "null_ids": counts["null_ids"],
        "duplicate_ids": int(len(hashes) - len(np.unique(hashes))),
        "null_texts": counts["null_texts"],
        "texts_too_short": counts["too_short"],
        "texts_too_long": counts["too_long"],
        "min_chars_seen": 0 if lengths[0] == math.inf else int(lengths[0]),
        "max_chars_seen": int(lengths[1]),
        "unexpected_domain_docs": sum(c for d, c in seen_domains.items() if d not in allowed),
        "schema_mismatched_shards": schema_mismatch,
        "domains": dict(sorted(seen_domains.items())),
    }
    table = pa.concat_tables(sample, promote_options="permissive") if sample else pa.schema(
        [pa.field(c, pa.string()) for c in expected_columns]).empty_table()
    return stats, table.slice(0, sample_docs)


# ---------------------------------------------------------------------------------------- validate
def _drop_bounds(stage_stats: dict[str, Any], gate: StageGateConfig) -> dict[str, tuple[float, float, float]]:
    """``{rule: (fraction, lo, hi)}`` for every rule in the stats or in the configured bounds."""
    n_in = stage_stats.get("in") or 0
    by_reason = stage_stats.get("by_reason", {}) or {}
    out = {}
    for rule in sorted(set(by_reason) | set(gate.drop_bounds)):
        lo, hi = gate.drop_bounds.get(rule, (0.0, gate.max_drop_fraction))
        out[rule] = (by_reason.get(rule, 0) / n_in if n_in else 0.0, lo, hi)
    return out


def _validate(stage: str, dataset_row: dict[str, Any], sample: Any, gate: StageGateConfig,
              domains: list[str], columns: list[str], drops: dict[str, tuple[float, float, float]]) -> list[dict]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import great_expectations.expectations as gxe
    import pandas as pd
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # keep stage logs readable
    source = ctx.data_sources.add_pandas(f"lmpipe_{stage}")

    def run(name: str, frame: pd.DataFrame, expectations: list) -> list[dict]:
        batch = source.add_dataframe_asset(name=name).add_batch_definition_whole_dataframe(name)
        suite = ctx.suites.add(gx.ExpectationSuite(name=f"{stage}.{name}"))
        for e in expectations:
            suite.add_expectation(e)
        vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{stage}.{name}", data=batch, suite=suite))
        result = vd.run(batch_parameters={"dataframe": frame})
        out = [_describe(f"{stage}.{name}", r.to_json_dict()) for r in result.results]
        if name == "dataset":  # a one-row frame: the measured value says more than "1 unexpected row"
            for r in out:
                r["observed"] = dataset_row.get(r["kwargs"].get("column"), r["observed"])
        return out

    zero = ["null_ids", "duplicate_ids", "null_texts", "texts_too_short", "texts_too_long",
            "unexpected_domain_docs", "schema_mismatched_shards", "conservation_gap"]
    ds_expect = [gxe.ExpectColumnValuesToBeBetween(column="docs", min_value=gate.min_docs)]
    ds_expect += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=0) for c in zero]
    ds_expect += [gxe.ExpectColumnValuesToBeBetween(column=f"drop_fraction.{rule}", min_value=lo, max_value=hi)
                  for rule, (_, lo, hi) in drops.items()]
    results = run("dataset", pd.DataFrame([dataset_row]), ds_expect)

    sample_expect = [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=columns),
        gxe.ExpectColumnValuesToNotBeNull(column="id"),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        gxe.ExpectColumnValuesToNotBeNull(column="text"),
        gxe.ExpectColumnValueLengthsToBeBetween(column="text", min_value=gate.min_chars, max_value=gate.max_chars),
        gxe.ExpectColumnValuesToBeInSet(column="domain", value_set=domains),
        gxe.ExpectColumnValuesToBeJsonParseable(column="meta"),
    ]
    results += run("sample", sample.to_pandas(), sample_expect if len(sample) else sample_expect[:1])
    return results


def _describe(suite: str, r: dict) -> dict:
    cfg = r.get("expectation_config", {})
    kwargs = {k: v for k, v in (cfg.get("kwargs") or {}).items() if k not in ("batch_id",) and v is not None}
    res = r.get("result") or {}
    observed = res.get("observed_value")
    if observed is None and "unexpected_count" in res:
        examples = [_short(v) for v in (res.get("partial_unexpected_list") or [])[:5]]
        observed = {"unexpected_count": res["unexpected_count"], "examples": examples}
    if r.get("exception_info", {}).get("raised_exception"):
        observed = {"exception": r["exception_info"].get("exception_message")}
    return {"suite": suite, "expectation": cfg.get("type"), "kwargs": kwargs, "success": bool(r.get("success")),
            "observed": observed}


def _short(value: Any, limit: int = 60) -> Any:
    """Long example values (whole documents) shortened to their start and length."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} chars)"
    return value


# ------------------------------------------------------------------------------------------ report
def _line(r: dict) -> str:
    args = ", ".join(f"{k}={v}" for k, v in r["kwargs"].items())
    return f"{r['suite']}: {r['expectation']}({args}) observed {json.dumps(r['observed'], default=str)}"


def _html(stage: str, summary: dict, results: list[dict], dataset_row: dict, profile_stats: dict) -> str:
    rows = "\n".join(
        f"<tr class={'ok' if r['success'] else 'fail'}><td>{'PASS' if r['success'] else 'FAIL'}</td>"
        f"<td>{html.escape(r['suite'])}</td><td>{html.escape(str(r['expectation']))}</td>"
        f"<td><code>{html.escape(json.dumps(r['kwargs'], default=str))}</code></td>"
        f"<td><code>{html.escape(json.dumps(r['observed'], default=str))}</code></td></tr>" for r in results)
    facts = "\n".join(f"<tr><td>{html.escape(k)}</td><td><code>{html.escape(json.dumps(v, default=str))}</code></td></tr>"
                      for k, v in {**profile_stats, **dataset_row}.items())
    verdict = "PASSED" if summary["success"] else f"FAILED ({summary['failed']} of {summary['evaluated']})"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>gate {html.escape(stage)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;vertical-align:top}}tr.ok td:first-child{{color:#070}}tr.fail td{{background:#fee}}
tr.fail td:first-child{{color:#b00;font-weight:bold}}</style></head><body>
<h1>Gate <code>{html.escape(stage)}</code>: {verdict}</h1>
<p>great-expectations {html.escape(summary.get('gx_version', ''))}; dataset <code>{html.escape(summary['dataset'])}</code>;
{summary['sampled_docs']} sampled rows validated in full, counts streamed over all {profile_stats['docs']} documents.</p>
<h2>Expectations</h2><table><tr><th></th><th>suite</th><th>expectation</th><th>arguments</th><th>observed</th></tr>
{rows}</table><h2>Measured</h2><table>{facts}</table></body></html>
"""


def check(stage: str, docs_dir: str | Path, stats: dict, cfg: GatesConfig, report_dir: str | Path) -> dict:
    """Run ``stage``'s gate on dataset ``docs_dir`` with the stage's ``stats``; raise ``GateError`` on failure.

    Returns ``{stage, success, evaluated, failed, report, ...}`` for the stage's metrics. The report (HTML +
    JSON) is written to ``report_dir`` in both cases.
    """
    start = time.perf_counter()
    report_dir = Path(report_dir)
    gate = cfg.for_stage(stage)
    domains = gate.domains if gate.domains is not None else cfg.domains
    columns = list(DOC_SCHEMA.names)
    summary: dict[str, Any] = {"stage": stage, "dataset": str(docs_dir), "report": str(report_dir / "index.html")}
    if not cfg.enabled:
        return {**summary, "success": True, "skipped": True, "evaluated": 0, "failed": 0, "report": None}
    prof, sample = profile(docs_dir, gate, domains, cfg.sample_docs, columns)
    drops = _drop_bounds(stats, gate)
    # documents a stage diverts to a held-out sample (ingest) are neither kept nor rejected, and not lost
    gap = (stats["in"] - stats["kept"] - stats["rejected"] - stats.get("held", 0)
           if {"in", "kept", "rejected"} <= set(stats) else 0)
    dataset_row = {k: v for k, v in prof.items() if k not in ("domains", "min_chars_seen", "max_chars_seen", "rows_read")}
    dataset_row["conservation_gap"] = gap
    dataset_row.update({f"drop_fraction.{rule}": frac for rule, (frac, _, _) in drops.items()})
    results = _validate(stage, dataset_row, sample, gate, domains, columns, drops)

    import great_expectations as gx

    failed = [r for r in results if not r["success"]]
    summary.update(success=not failed, evaluated=len(results), failed=len(failed), sampled_docs=len(sample),
                   gx_version=gx.__version__, seconds=round(time.perf_counter() - start, 2))
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "results.json").write_text(json.dumps(
        {"summary": summary, "measured": {**prof, **dataset_row}, "results": results}, indent=1, default=str) + "\n")
    (report_dir / "index.html").write_text(_html(stage, summary, results, dataset_row, prof))
    if failed:
        lines = "\n  ".join(_line(r) for r in failed)
        summary["failed_expectations"] = [_line(r) for r in failed]
        raise GateError(f"gate '{stage}' failed {len(failed)} of {len(results)} expectations "
                        f"(report: {summary['report']}):\n  {lines}", summary)
    return summary
