"""The study flow: every (arm, seed) of ``studies/NAME.yaml`` as a DVC experiment, then intervals and verdicts.

Tasks: validate (fails before anything runs) → plan (what DVC already holds) → run the missing experiments
(``dvc exp run --queue`` + ``dvc queue start -j N``) → analyse → write ``studies/results/NAME.json`` and
``reports/studies/NAME.html``, linked as Prefect artifacts with the claims table. Prefect's result caching
stays off: DVC's experiment store is the cache.

    python -m flows.study smoke            # or: lmpipe study run smoke [--jobs N]
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from lmpipe.studies import report, runner
from lmpipe.studies.spec import Study, load_study

ROOT = Path(__file__).resolve().parent.parent


@task(cache_policy=NO_CACHE)
def validate(name: str, root: Path) -> Study:
    return load_study(name, root)


@task(cache_policy=NO_CACHE)
def plan(study: Study, root: Path) -> runner.Plan:
    p = runner.plan(study, root)
    get_run_logger().info("plan: %s", p.summary())
    return p


@task(cache_policy=NO_CACHE, task_run_name="experiments-{study.name}")
def run_experiments(study: Study, root: Path, p: runner.Plan, jobs: int | None, poll_s: float) -> runner.Plan:
    return runner.execute(study, root, p, jobs, poll_s, log=get_run_logger().info)


@task(cache_policy=NO_CACHE)
def analyse_and_write(study: Study, root: Path, p: runner.Plan) -> dict:
    results = runner.analyse(study, root, p)
    js, page = report.write(results, root)
    key = f"study-{study.name}".replace("_", "-")
    rows = "\n".join(f"| {c['expect']} | {c['metric']} | {c['effect']} | {c['ci']} | **{c['verdict']}** |"
                     for c in results["claims"])
    create_markdown_artifact(key=key, description=f"lmpipe study {study.name}", markdown=(
        f"# Study `{study.name}`: {study.title}\n\n| expected | metric | effect | 95 % CI | verdict |\n"
        f"|---|---|---|---|---|\n{rows}\n\nResults: `{js.relative_to(root)}`"))
    create_link_artifact(key=f"{key}-report", link=page.resolve().as_uri(), link_text=f"study {study.name}",
                         description="Self-contained HTML page of the study")
    return results


@flow(name="lmpipe-study", log_prints=True)
def study_flow(name: str, jobs: int | None = None, root: str | None = None, poll_s: float = 5.0) -> dict:
    """Run (or finish, or just re-analyse) study ``name``; returns the results JSON."""
    base = Path(root) if root else ROOT
    study = validate(name, base)
    p = plan(study, base)
    p = run_experiments(study, base, p, jobs, poll_s)
    return analyse_and_write(study, base, p)


if __name__ == "__main__":
    study_flow(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
