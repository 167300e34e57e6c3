"""The pipeline flow: one Prefect task per DVC stage, in dependency order, independent stages side by side.

Each task runs ``dvc repro --single-item <stage>``, so DVC decides whether the stage is stale and keeps the
lineage; Prefect adds retries with backoff, logs, scheduling and a markdown artifact of each stage's
metrics. Prefect's own result caching stays off: DVC already skips unchanged stages. Up to ``jobs`` stages
whose upstream stages have finished run at once (e.g. augment beside tune → pretrain): DVC releases its repo
lock while a stage's command runs and takes it back (``--wait-for-lock``) to record the result in dvc.lock.
One ``dvc status`` at the start spares the up-to-date stages a DVC process each (a no-op rerun of the whole
pipeline takes seconds): a stage it does not list runs only if a stage upstream of it runs.

    python -m flows.pipeline                  # whole pipeline, ephemeral Prefect API
    python -m flows.pipeline dedup            # dedup and everything upstream of it (as `dvc repro dedup`)
    python -m flows.pipeline --jobs 1         # one stage at a time
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.pipeline   # against a Prefect server
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from graphlib import TopologicalSorter
from pathlib import Path

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

ROOT = Path(__file__).resolve().parent.parent


def stage_graph(dvc_yaml: Path = ROOT / "dvc.yaml") -> tuple[list[str], dict[str, set[str]]]:
    """Stage names in dvc.yaml order, and each stage's upstream stages (those whose outs it depends on)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]

    def paths(items: list) -> list[str]:
        return [next(iter(i)) if isinstance(i, dict) else i for i in items or []]

    producers = {out: name for name, s in stages.items()
                 for key in ("outs", "metrics", "plots") for out in paths(s.get(key))}
    graph: dict[str, set[str]] = {}
    for name, s in stages.items():
        deps = set()
        for d in paths(s.get("deps")):
            deps |= {p for out, p in producers.items() if d == out or d.startswith(out.rstrip("/") + "/")}
        graph[name] = deps - {name}
    return list(stages), graph


def stage_order(dvc_yaml: Path = ROOT / "dvc.yaml", targets: list[str] | None = None) -> list[str]:
    """Stages in dependency order, ties in dvc.yaml order; with ``targets``, only they and their upstream."""
    names, graph = stage_graph(dvc_yaml)
    unknown = set(targets or []) - set(names)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; dvc.yaml has {names}")
    if targets:
        keep, todo = set(), list(targets)
        while todo:
            if (s := todo.pop()) not in keep:
                keep.add(s)
                todo.extend(graph[s])
        graph = {n: d for n, d in graph.items() if n in keep}
    # Kahn's algorithm, always taking the earliest ready stage in dvc.yaml order, so the run reads like the file
    sorter = TopologicalSorter(graph)
    sorter.prepare()
    position = {name: i for i, name in enumerate(names)}
    order: list[str] = []
    ready = sorted(sorter.get_ready(), key=position.__getitem__)
    while ready:
        stage = ready.pop(0)
        order.append(stage)
        sorter.done(stage)
        ready = sorted([*ready, *sorter.get_ready()], key=position.__getitem__)
    return order


def _metrics_markdown(stage: str, metrics_file: Path) -> str:
    if not metrics_file.exists():
        return f"# {stage}\n\n(no metrics file)"
    m = json.loads(metrics_file.read_text())
    rows = "\n".join(f"| {k} | {json.dumps(v) if isinstance(v, dict | list) else v} |" for k, v in m.items())
    return f"# Stage `{stage}`\n\n| metric | value |\n|---|---|\n{rows}\n"


def stale_stages() -> set[str] | None:
    """Stages DVC finds changed themselves (one ``dvc status``), or None when it cannot tell. A stage is only
    known up to date while none of its upstream stages runs: rerun outputs may change its deps."""
    r = subprocess.run(["dvc", "status", "--json"], cwd=ROOT, capture_output=True, text=True)
    try:
        return set(json.loads(r.stdout)) if r.returncode == 0 else None
    except json.JSONDecodeError:
        return None


@task(retries=2, retry_delay_seconds=exponential_backoff(backoff_factor=5), retry_jitter_factor=0.5,
      cache_policy=NO_CACHE, task_run_name="dvc-{stage}")
def run_stage(stage: str, force: bool = False, up_to_date: bool = False) -> dict:
    """``dvc repro`` one stage; ``up_to_date`` (known from ``stale_stages``) skips that process (~3 s of DVC
    start-up per stage) and only publishes the stage's recorded metrics."""
    log = get_run_logger()
    if up_to_date:
        log.info("%s: up to date (dvc status), not rerun", stage)
        return _publish(stage)
    # --wait-for-lock: a stage running beside this one holds DVC's repo lock for a moment when it starts or
    # records its result; wait for it instead of failing
    cmd = ["dvc", "--wait-for-lock", "repro", "--single-item", stage] + (["--force"] if force else [])
    log.info("$ %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    assert proc.stdout is not None
    tail: list[str] = []
    for line in proc.stdout:
        sys.stdout.write(f"[{stage}] {line}")  # the prefix tells concurrent stages apart
        tail = (tail + [line.rstrip()])[-40:]
    if proc.wait() != 0:
        raise RuntimeError(f"stage {stage!r} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return _publish(stage)


def _publish(stage: str) -> dict:
    """The stage's metrics, as Prefect artifacts (and its report or quality-gate page as links)."""
    metrics_file = ROOT / "metrics" / f"{stage}.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
    report = ROOT / "reports" / "index.html"
    if stage == "report" and report.exists():
        create_link_artifact(key="run-report", link=report.as_uri(), link_text="lmpipe run report",
                             description="Self-contained HTML report of this run")
    gate = metrics.get("gate") or {}
    if gate.get("report"):  # the data-quality gate's page (great-expectations results)
        create_link_artifact(key=f"gate-{stage}".replace("_", "-"), link=(ROOT / gate["report"]).resolve().as_uri(),
                             link_text=f"{stage} quality gate", description=f"great-expectations gate after {stage}")
    create_markdown_artifact(key=f"stage-{stage}".replace("_", "-"), markdown=_metrics_markdown(stage, metrics_file),
                             description=f"lmpipe stage {stage}")
    return metrics


def default_jobs() -> int:
    """One stage per core: each stage's torch work uses one thread by default (``*.threads``)."""
    return os.cpu_count() or 1


@flow(name="lmpipe-pipeline", log_prints=True, task_runner=ThreadPoolTaskRunner())
def pipeline(
    targets: list[str] | None = None, force: bool = False, jobs: int | None = None, retries: int | None = None
) -> dict[str, dict]:
    """Run ``targets`` and everything upstream of them (default: all of dvc.yaml) as ``dvc repro <targets>``
    would, with up to ``jobs`` independent stages at once (default: one per core); returns each stage's
    metrics. ``force`` reruns even up-to-date stages; ``retries`` overrides the task's retries of a failed
    stage (backoff between tries). After a failed stage no new stage starts; the running
    ones finish (their results are recorded), then the flow fails with the first error."""
    order = stage_order(targets=targets)
    _, graph = stage_graph()
    jobs = max(1, jobs or default_jobs())
    task = run_stage if retries is None else run_stage.with_options(retries=retries)
    stale = None if force else stale_stages()
    todo, done, failed, ran = list(order), set(), [], set()
    futures: dict[str, PrefectFuture] = {}
    running: dict[str, PrefectFuture] = {}
    while todo or running:
        # ready stages start in stage_order's order, so the run still reads like dvc.yaml
        ready = [s for s in todo if graph[s] <= done] if not failed else []
        for stage in ready[: jobs - len(running)]:
            todo.remove(stage)
            fresh = stale is not None and stage not in stale and not graph[stage] & ran
            if not fresh:
                ran.add(stage)
            running[stage] = futures[stage] = task.submit(stage, force, fresh)
        if not running:
            break
        finished = next(as_completed(list(running.values())))
        stage = next(s for s, f in running.items() if f is finished)
        del running[stage]
        finished.wait()  # as_completed may yield before the final state is recorded on the future
        if finished.state.is_completed():
            done.add(stage)
        else:
            failed.append(stage)
    if failed:
        get_run_logger().error("failed: %s; not started: %s", ", ".join(failed), ", ".join(todo) or "none")
        futures[failed[0]].result()  # raises the stage's own error (its command and the tail of its output)
        raise RuntimeError(f"stage(s) {', '.join(failed)} did not complete")
    return {s: futures[s].result() for s in order}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Run the lmpipe pipeline (DVC stages) as a Prefect flow.")
    ap.add_argument("targets", nargs="*", help="stages to run, with everything upstream (default: all)")
    ap.add_argument("--jobs", "-j", type=int, default=None, help="stages run at once (default: one per core)")
    ap.add_argument("--force", action="store_true", help="rerun stages even when DVC finds them up to date")
    ap.add_argument("--retries", type=int, default=None, help="tries after a failed stage (default: 2, backing off)")
    args = ap.parse_args(argv)
    pipeline(targets=args.targets or None, force=args.force, jobs=args.jobs, retries=args.retries)


if __name__ == "__main__":
    main()
