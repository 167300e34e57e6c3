"""The study flow: every (arm, seed) of ``studies/NAME.yaml`` as a DVC experiment, then intervals and verdicts.

Tasks: validate (fails before anything runs) → plan (what DVC already holds) → run the missing experiments
(``dvc exp run --queue`` + ``dvc queue start -j N``) → analyse → write ``studies/results/NAME.json`` and
``reports/studies/NAME.html``, linked as Prefect artifacts with the claims table. Prefect's result caching
stays off: DVC's experiment store is the cache.

    python -m flows.study smoke [--jobs N] [--mode queue|workspace] [--profile P]   # = lmpipe study run
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from lmpipe.studies import experiments as ex
from lmpipe.studies import report, runner
from lmpipe.studies.spec import load_study

ROOT = Path(__file__).resolve().parent.parent


# Tasks pass the study's name, not its objects: each reloads the (validated) file, and the plan is DVC's state.
@task(cache_policy=NO_CACHE)
def validate(name: str, root: str, profile: str | None) -> dict:
    s = load_study(name, root, profile)
    return {"arms": list(s.arms), "seeds": s.seeds, "target": s.target, "control": s.control}


@task(cache_policy=NO_CACHE, task_run_name="experiments-{name}")
def run_experiments(
    name: str, root: str, jobs: int | None, poll_s: float, mode: str | None, profile: str | None
) -> dict:
    log = get_run_logger()
    study, base = load_study(name, root, profile), Path(root)
    if orphans := ex.fail_orphans(base):  # left by a crash: requeued below as failed cells
        log.info("marked failed (taken by a worker that died): %s", ", ".join(orphans))
    p = runner.plan(study, base)
    log.info("plan: %s", p.summary())
    return runner.execute(study, base, p, jobs, poll_s, log=log.info, mode=mode).summary()


@task(cache_policy=NO_CACHE)
def analyse_and_write(name: str, root: str, profile: str | None) -> dict:
    study, base = load_study(name, root, profile), Path(root)
    results = runner.analyse(study, base, runner.plan(study, base))
    js, page = report.write(results, base)
    key = f"study-{study.label}".replace("_", "-").replace(".", "-")  # Prefect keys: a-z, 0-9, dashes
    rows = "\n".join(
        f"| {c['expect']} | {c['metric']} | {c['effect']} | {c['ci']} | **{c['verdict']}** |"
        for c in results["claims"]
    )
    create_markdown_artifact(
        key=key,
        description=f"lmpipe study {study.name}",
        markdown=(
            f"# Study `{study.name}`: {study.title}\n\n| expected | metric | effect | 95 % CI | verdict |\n"
            f"|---|---|---|---|---|\n{rows}\n\nResults: `{js.relative_to(base)}`"
        ),
    )
    create_link_artifact(
        key=f"{key}-report",
        link=page.resolve().as_uri(),
        link_text=f"study {study.name}",
        description="Self-contained HTML page of the study",
    )
    return results


@flow(name="lmpipe-study", log_prints=True)
def study_flow(
    name: str,
    jobs: int | None = None,
    root: str | None = None,
    poll_s: float = 5.0,
    mode: str | None = None,
    profile: str | None = None,
) -> dict:
    """Run (or finish, or just re-analyse) study ``name``; returns the results JSON."""
    base = str(Path(root).resolve() if root else ROOT)
    validate(name, base, profile)  # fails before any experiment is queued
    run_experiments(name, base, jobs, poll_s, mode, profile)
    return analyse_and_write(name, base, profile)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Run a study (studies/NAME.yaml) as DVC experiments.")
    ap.add_argument("name")
    ap.add_argument("--jobs", type=int, default=None, help="parallel DVC queue workers")
    ap.add_argument("--mode", choices=["queue", "workspace"], default=None)
    ap.add_argument("--profile", default=None, help="run at another profile ('none' = params.yaml)")
    a = ap.parse_args()
    study_flow(a.name, a.jobs, mode=a.mode, profile=a.profile)
