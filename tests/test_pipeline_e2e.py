"""End to end on a throwaway copy of the project: real `dvc repro`, real Prefect flows, a real S3 remote."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, free_port, make_workspace, wait_for_port

pytestmark = pytest.mark.e2e(minutes=3)
BIN = Path(sys.executable).parent


def sh(cmd, cwd, **kw):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **kw.pop("env", {})}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh git + DVC repo holding this project's pipeline, with a small demo corpus, after one `dvc repro`."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["demo"].update(prose_docs=40, code_docs=30, math_docs=40, fiction_entities=6)
    # no learned rater: its LLM labelling is the whole pipeline's e2e test's (the graph is rendered without it)
    params["filter"]["score"]["quality"]["enabled"] = False
    root = make_workspace(tmp_path_factory.mktemp("proj"), params)
    out = sh(["dvc", "repro", "ingest"], root)
    assert "Running stage 'demo'" in out and "Running stage 'ingest'" in out
    return root


def test_repro_is_incremental(project):
    t = time.perf_counter()
    out = sh(["dvc", "repro", "ingest"], project)
    assert time.perf_counter() - t < 5, "a no-op repro must take under 5 s"
    assert "Running stage" not in out and "didn't change" in out
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ingest"]["max_chars"] = 5000  # only ingest reads this
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = sh(["dvc", "repro", "ingest"], project)
    assert "Stage 'demo' didn't change" in out and "Running stage 'ingest'" in out
    m = json.loads((project / "metrics" / "ingest.json").read_text())
    assert m["by_reason"].get("oversize", 0) > 0  # the demo's very long docs now exceed the bound
    assert m["in"] == m["kept"] + m["rejected"] + m["held"]  # held: the pre-filter held-out sample


def test_prefect_flow_against_server(project, tmp_path):
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PATH": f"{BIN}:{os.environ['PATH']}"}
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_for_port(port, server, timeout=120)
        sh([sys.executable, "-m", "flows.pipeline", "ingest"], project,
           env={"PREFECT_HOME": env["PREFECT_HOME"], "PREFECT_API_URL": api}, timeout=300)
        check = """
import asyncio
from prefect.client.orchestration import get_client
async def main():
    async with get_client() as c:
        runs = await c.read_flow_runs()
        arts = await c.read_artifacts()
        print([r.state.type.value for r in runs], sorted(a.key for a in arts))
asyncio.run(main())
"""
        penv = {"PREFECT_HOME": env["PREFECT_HOME"], "PREFECT_API_URL": api, "LMPIPE_HOME": str(project)}
        out = sh([sys.executable, "-c", check], project, env=penv)
        assert "['COMPLETED']" in out and "stage-ingest" in out and "gate-ingest" in out

        # The deployments in infra/ deploy, schedule, and run through a real process worker.
        shutil.copytree(ROOT / "infra", project / "infra", dirs_exist_ok=True)
        prefect = str(BIN / "prefect")
        sh([prefect, "work-pool", "create", "lmpipe-process", "--type", "process"], project, env=penv)
        sh([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", "infra/prefect/prefect.yaml"], project, env=penv)
        listed = sh([prefect, "deployment", "ls"], project, env=penv)
        assert "lmpipe-pipeline/nightly" in listed and "lmpipe-pipeline/data-only" in listed
        sh([prefect, "deployment", "run", "lmpipe-pipeline/data-only"], project, env=penv)
        sh([prefect, "worker", "start", "--pool", "lmpipe-process", "--run-once"], project, env=penv, timeout=300)
        out = sh([sys.executable, "-c", check], project, env=penv)
        assert out.count("COMPLETED") == 2 and "SCHEDULED" in out  # the nightly schedule queued future runs
        # data-only promises ingest → filter → dedup: its run produced each of their outputs
        for stage in ("ingest", "score", "filter", "dedup"):
            assert (project / "metrics" / f"{stage}.json").exists(), stage
    finally:
        server.terminate()
        server.wait(30)


def test_dvc_push_pull_through_s3(project, s3_server):
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="dvc-store")
    sh(["dvc", "remote", "add", "-f", "-d", "store", "s3://dvc-store/cache"], project)
    sh(["dvc", "remote", "modify", "store", "endpointurl", s3_server], project)
    before = (project / "data/ingest/docs/manifest.json").read_text()
    sh(["dvc", "push", "--with-deps", "ingest"], project)  # the stages this test ran (the rest never did)
    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(project / "data")
    sh(["dvc", "pull", "--with-deps", "ingest"], project)
    assert (project / "data/ingest/docs/manifest.json").read_text() == before
    assert sh(["dvc", "status", "--with-deps", "ingest"], project).strip().endswith("Data and pipelines are up to date.")
