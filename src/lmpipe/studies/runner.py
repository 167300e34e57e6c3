"""Run a study: plan which (arm, seed) experiments are missing, queue them, wait, and analyse what DVC holds.

``plan`` looks every experiment up in DVC, so a rerun of a finished study queues nothing, an interrupted one
queues only what is neither finished nor still queued/running, and extending ``seeds`` runs only the new seeds.
``analyse`` turns the experiments' metrics into per-arm intervals, paired differences and claim verdicts.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmpipe.studies import experiments as ex
from lmpipe.studies.spec import Study, flatten
from lmpipe.studies.stats import interval, paired_differences, standardized, verdict

Cell = tuple[str, int]  # (arm, seed)


@dataclass
class Plan:
    names: dict[Cell, str]
    done: dict[Cell, ex.Experiment] = field(default_factory=dict)
    pending: dict[Cell, ex.Experiment] = field(default_factory=dict)  # queued or running already
    failed: dict[Cell, ex.Experiment] = field(default_factory=dict)
    missing: list[Cell] = field(default_factory=list)

    def summary(self) -> dict[str, int]:
        return {
            "cells": len(self.names),
            "done": len(self.done),
            "pending": len(self.pending),
            "to_queue": len(self.missing) + len(self.failed),
        }


def plan(study: Study, root: Path) -> Plan:
    code = ex.code_fingerprint(root)
    names = {(a, s): f"{study.exp_name(a, s)}-{code}" for a in study.arms for s in study.seeds}
    known = ex.show(root)
    p = Plan(names=names)
    for cell, name in names.items():
        e = known.get(name)
        if e is None:
            p.missing.append(cell)
        elif e.state == "success" and ex.matches(e, study.overrides(*cell)):
            p.done[cell] = e
        elif e.state in ("queued", "running"):
            p.pending[cell] = e
        else:
            p.failed[cell] = e
    return p


def execute(
    study: Study,
    root: Path,
    p: Plan,
    jobs: int | None = None,
    poll_s: float = 5.0,
    log: Callable[[str], None] = print,
    mode: str | None = None,
) -> Plan:
    """Queue the missing cells, start ``jobs`` DVC queue workers, and wait until no cell is queued or running.
    ``mode='workspace'`` runs them one by one in this workspace instead (arm by arm, so the seeds of an arm
    reuse the upstream stages the previous one left up to date)."""
    to_queue = [*p.missing, *p.failed]
    if not to_queue and not p.pending:
        return p  # nothing to run: a finished study is only re-analysed
    ex.remove_failed(root, [p.names[c] for c in p.failed])
    if (mode or study.mode) == "workspace":
        for cell in sorted(to_queue, key=lambda c: (list(study.arms).index(c[0]), c[1])):
            log(f"run {p.names[cell]} in the workspace")
            ex.run_in_workspace(root, p.names[cell], study.target, study.overrides(*cell))
    else:
        copy = ex.copy_paths(root, study.target) if to_queue else []
        for cell in to_queue:
            log(f"queue {p.names[cell]}")
            ex.queue(root, p.names[cell], study.target, study.overrides(*cell), copy)
        ex.start_workers(root, jobs or study.jobs)
    while True:
        now = plan(study, root)
        if not now.pending:
            break
        log(f"{len(now.done)}/{len(now.names)} done, {len(now.pending)} queued or running")
        time.sleep(poll_s)
    if now.failed or now.missing:
        details = "\n".join(f"--- {now.names[c]}\n{ex.logs(root, now.names[c])}" for c in now.failed)
        raise ex.ExperimentError(
            f"{len(now.failed) + len(now.missing)} experiment(s) did not finish:\n{details}"
        )
    return now


def metric_value(e: ex.Experiment, path: str) -> float | None:
    stage, *keys = path.split(".")
    data: Any = e.metrics.get(f"metrics/{stage}.json")
    for k in keys:
        if not isinstance(data, dict) or k not in data:
            return None
        data = data[k]
    return float(data) if isinstance(data, int | float) and not isinstance(data, bool) else None


def read_curve(root: Path, e: ex.Experiment, path: str, x: str, y: str | None) -> list[tuple[float, float]]:
    text = ex.read_file(root, e.rev, path)
    if not text:
        return []
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    col = y or Path(path).stem
    return [(float(r[x]), float(r[col])) for r in rows if r.get(col) not in (None, "")]


def _ci(iv: Any) -> list[float | None]:
    return [iv.lo, iv.hi]


def analyse(study: Study, root: Path, p: Plan) -> dict[str, Any]:
    """The study's results: the JSON committed as ``studies/results/NAME.json``."""
    values: dict[str, dict[str, dict[int, float]]] = {m: {a: {} for a in study.arms} for m in study.metrics}
    for (arm, seed), e in p.done.items():
        for m, spec in study.metrics.items():
            v = metric_value(e, spec.path)
            if v is not None:
                values[m][arm][seed] = v
    ctrl = study.control
    arms: dict[str, Any] = {}
    for arm, spec in study.arms.items():
        out: dict[str, Any] = {
            "description": spec.description,
            "control": spec.control,
            "params": flatten(spec.params),
            "experiments": {str(s): p.names[(arm, s)] for s in study.seeds},
            "finished_seeds": sorted(s for (a, s) in p.done if a == arm),
            "metrics": {},
        }
        for m in study.metrics:
            vals = values[m][arm]
            if not vals:
                out["metrics"][m] = {"values": {}, "mean": None, "ci": [None, None], "n": 0}
                continue
            iv = interval(list(vals.values()), study.interval)
            row = {
                "values": {str(s): v for s, v in sorted(vals.items())},
                "mean": iv.mean,
                "ci": _ci(iv),
                "sd": iv.sd,
                "n": iv.n,
            }
            if arm != ctrl:
                d = paired_differences(vals, values[m][ctrl])
                if d:
                    div = interval(list(d.values()), study.interval)
                    row["vs_control"] = {
                        "effect": div.mean,
                        "ci": _ci(div),
                        "n": div.n,
                        "d_z": standardized(div),
                    }
            out["metrics"][m] = row
        arms[arm] = out

    claims = []
    for c in study.claims:
        for a, op, b in c.pairs():
            d = paired_differences(values[c.metric][a], values[c.metric][b])
            entry: dict[str, Any] = {
                "claim": c.claim,
                "source": c.source,
                "metric": c.metric,
                "expect": f"{a} {op} {b}",
                "effect_definition": f"mean over seeds of {a} − {b}",
            }
            if d:
                div = interval(list(d.values()), study.interval)
                base = arms[b]["metrics"][c.metric]["mean"]
                entry |= {
                    "effect": div.mean,
                    "ci": _ci(div),
                    "n": div.n,
                    "d_z": standardized(div),
                    "relative": div.mean / abs(base) if base else None,
                    "verdict": verdict(div, op),
                }
            else:
                entry |= {
                    "effect": None,
                    "ci": [None, None],
                    "n": 0,
                    "d_z": None,
                    "relative": None,
                    "verdict": "inconclusive",
                }
            claims.append(entry)

    curves: dict[str, Any] = {}
    for cname, cspec in study.curves.items():
        curves[cname] = {
            arm: {
                str(s): read_curve(root, p.done[(arm, s)], cspec.path, cspec.x, cspec.y)
                for s in study.seeds
                if (arm, s) in p.done
            }
            for arm in study.arms
        }
    return {
        "study": study.name,
        "label": study.label,
        "title": study.title,
        "description": study.description,
        "notes": study.notes,
        "profile": study.profile,
        "target": study.target,
        "seeds": study.seeds,
        "seed_param": study.seed_param,
        "control": ctrl,
        "interval": "95 % Student-t over seeds (mean ± t(0.975, n−1)·s/√n); differences paired by seed"
        if study.interval == "t"
        else "95 % percentile bootstrap of the mean over seeds; differences paired by seed",
        "metrics": {m: s.model_dump() for m, s in study.metrics.items()},
        "claims": claims,
        "arms": arms,
        "curves": curves,
        "missing": [p.names[c] for c in p.names if c not in p.done],
    }
