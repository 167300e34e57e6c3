"""Shared by every benchmark: where the real data lives, repeated timing with median + spread, and one JSON form.

Every bench writes ``bench/results/<name>.json`` through :func:`write_result`:

- ``benchmark``, ``date`` (UTC), ``machine`` (CPU model, cores, platform, Python), ``command``, ``repeats``;
- ``input``: what was measured and how much of it (the size flags used);
- ``tables``: ``{title, metric, higher_is_better, ours: [...], peers: [...], rows: {path: {metric: stat}}}``,
  where a stat is ``{"median", "min", "max", "runs": [...]}`` over the repeats (or a plain value);
- ``checks`` (agreement, identical outputs, ...) and ``notes``.

``bench/report.py`` renders ``bench/RESULTS.md`` from these files alone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LMPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"
#: Repeats of every timed path (the house rule: at least 3).
REPEATS = int(os.environ.get("LMPIPE_BENCH_REPEATS", "3"))
_START_LOAD = round(os.getloadavg()[0], 2)  # how busy the shared machine was when the bench started
if REPEATS < 3:
    raise SystemExit("LMPIPE_BENCH_REPEATS must be >= 3 (median and spread need three runs)")


def require_shared() -> Path:
    if not (SHARED / "README.md").exists():
        raise SystemExit(f"benchmark data not found at {SHARED} (set LMPIPE_SHARED_DATA)")
    return SHARED


def stat(values: list[float], digits: int = 4) -> dict[str, Any]:
    """Median and spread (min, max) of repeated measurements, with the runs themselves."""
    r = lambda x: round(float(x), digits)  # noqa: E731
    return {
        "median": r(statistics.median(values)),
        "min": r(min(values)),
        "max": r(max(values)),
        "runs": [r(v) for v in values],
    }


def rate(amount: float, seconds: list[float], digits: int = 1) -> dict[str, Any]:
    """``amount`` per second for each run's wall time, as a stat (median rate = amount / median time)."""
    return stat([amount / s for s in seconds], digits)


def alternate(
    paths: dict[str, Callable[[], Any]], repeats: int = REPEATS, warmup: bool = False
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Wall seconds of each path over ``repeats`` rounds, the paths interleaved within each round so the load of
    a shared machine hits every path alike; returns (seconds per path, last output per path)."""
    if warmup:
        for fn in paths.values():
            fn()
    secs: dict[str, list[float]] = {k: [] for k in paths}
    outs: dict[str, Any] = {}
    for _ in range(repeats):
        for name, fn in paths.items():
            t = time.perf_counter()
            outs[name] = fn()
            secs[name].append(time.perf_counter() - t)
    return secs, outs


def table(
    title: str,
    metric: str,
    rows: dict[str, dict[str, Any]],
    ours: list[str],
    peers: list[str],
    higher_is_better: bool = True,
    note: str = "",
) -> dict[str, Any]:
    """One comparison: ``rows[path][metric]`` is a stat; ``ours`` and ``peers`` name the rows of each side."""
    missing = [p for p in ours + peers if metric not in rows.get(p, {})]
    if missing:
        raise ValueError(f"table {title!r}: rows without {metric!r}: {missing}")
    return {
        "title": title,
        "metric": metric,
        "higher_is_better": higher_is_better,
        "ours": ours,
        "peers": peers,
        "rows": rows,
        "note": note,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg_1m": _START_LOAD,
        "note": os.environ.get("LMPIPE_BENCH_MACHINE_NOTE", ""),
    }


def write_result(
    name: str,
    *,
    input: dict[str, Any],
    tables: list[dict[str, Any]],  # noqa: A002
    checks: dict[str, Any] | None = None,
    notes: list[str] | None = None,
    repeats: int = REPEATS,
    **extra: Any,
) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    result = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "command": " ".join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "repeats": repeats,
        "statistic": f"median, with min and max, of {repeats} runs",
        "input": input,
        "tables": tables,
        "checks": checks or {},
        "notes": notes or [],
        **extra,
    }
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("benchmark", "input", "checks")}, indent=1))
    for t in tables:
        print(f"{t['title']} ({t['metric']}):")
        for row, vals in t["rows"].items():
            v = vals[t["metric"]]
            print(f"  {row}: {v['median'] if isinstance(v, dict) else v}")
    return path
