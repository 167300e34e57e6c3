"""Studies end to end on a throwaway copy of the project: real DVC experiments (queue + workers), real Prefect.

The workspace's params.yaml is params.yaml + profiles/tiny.yaml with the data stages already run and
committed, so each experiment only trains (16 steps of a tiny model); the study still passes the
whole tiny profile as ``-S`` overrides, which DVC finds unchanged.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from lmpipe.config import deep_merge, read_yaml_mapping
from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def sh(cmd, cwd, env=None, timeout=2400):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r.stdout + r.stderr


def exps(root) -> dict[str, tuple[str, str]]:
    """name → (rev, state) straight from `dvc exp show --json -A` (independent of the runner's parsing)."""
    out = {}
    for b in json.loads(sh(["dvc", "exp", "show", "--json", "-A"], root)):
        for e in b.get("experiments") or []:
            state = (e.get("executor") or {}).get("state") or "success"
            out[e["name"]] = (e["revs"][0]["rev"], state)
    return out


def queue_tasks(root) -> int:
    """Every experiment DVC's queue was ever given (finished, failed, queued, running)."""
    lines = sh(["dvc", "queue", "status"], root).splitlines()
    return sum(1 for ln in lines[1:] if ln.strip() and not ln.startswith("Worker status"))


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("study")
    for d in ("src", "stages", "flows", "profiles", "studies"):
        shutil.copytree(
            ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "results")
        )
    for f in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / f, root)
    params = deep_merge(
        yaml.safe_load((ROOT / "params.yaml").read_text()), read_yaml_mapping(ROOT / "profiles/tiny.yaml")
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q"], root)
    sh(["dvc", "init", "-q"], root)
    sh(["dvc", "config", "core.analytics", "false"], root)
    sh(["dvc", "repro", "tokenize"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny baseline"], root)
    yield root
    subprocess.run([str(BIN / "dvc"), "queue", "stop", "--kill"], cwd=root, capture_output=True)


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory):
    return {
        "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect")),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }


def test_study_runs_end_to_end(ws, prefect_env):
    out = sh([sys.executable, "-m", "flows.study", "smoke"], ws, env=prefect_env)
    assert "Finished in state Completed" in out
    found = exps(ws)
    names = [n for n in found if n.startswith("smoke-")]
    assert len(names) == 4 and all(found[n][1] == "success" for n in names)

    r = json.loads((ws / "studies/results/smoke.json").read_text())
    assert r["missing"] == []
    # the values the study reports are those DVC holds for each experiment's commit
    show = {
        e["name"]: e["revs"][0]["data"]["metrics"]["metrics/pretrain.json"]["data"]["val_loss"]
        for b in json.loads(sh(["dvc", "exp", "show", "--json"], ws))
        for e in b.get("experiments") or []
    }
    for arm in ("default", "tiny_lr"):
        for seed, name in r["arms"][arm]["experiments"].items():
            assert r["arms"][arm]["metrics"]["val_loss"]["values"][seed] == pytest.approx(show[name])
    # the claim's interval, recomputed with SciPy's paired t-test from DVC's numbers
    from scipy import stats

    a = [show[r["arms"]["tiny_lr"]["experiments"][s]] for s in ("1", "2")]
    b = [show[r["arms"]["default"]["experiments"][s]] for s in ("1", "2")]
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    claim = r["claims"][0]
    assert claim["ci"] == pytest.approx([ci.low, ci.high]) and claim["effect"] == pytest.approx(
        sum(a) / 2 - sum(b) / 2
    )
    assert claim["verdict"] == ("holds" if ci.low > 0 else "contradicted" if ci.high < 0 else "inconclusive")
    assert min(a) > max(b)  # 16 steps at lr 1e-5 barely move the loss
    # the curves come from the experiments' commits: 16 logged steps per run
    assert all(len(pts) == 16 for arm in r["curves"]["train_loss"].values() for pts in arm.values())
    page = (ws / "reports/studies/smoke.html").read_text()
    assert "data:image/png;base64," in page and "tiny_lr &gt; default" in page


def test_rerun_starts_no_experiment(ws, prefect_env):
    before, tasks = exps(ws), queue_tasks(ws)
    out = sh([str(BIN / "lmpipe"), "study", "run", "smoke"], ws, env=prefect_env)
    assert "tiny_lr > default" in out
    assert exps(ws) == before and queue_tasks(ws) == tasks


def test_killed_study_resumes(ws, prefect_env):
    """Add a third seed, run with one worker, kill the runner and the DVC workers once one new experiment has
    finished, rerun: only the unfinished experiment runs again, the finished one is kept as it was."""
    study = yaml.safe_load((ws / "studies/smoke.yaml").read_text())
    study["seeds"] = [1, 2, 3]
    (ws / "studies/smoke.yaml").write_text(yaml.safe_dump(study))
    before = exps(ws)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **prefect_env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.study", "smoke", "--jobs", "1"],
        cwd=ws,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 1800
        while time.time() < deadline:
            new = {n: v for n, v in exps(ws).items() if n not in before}
            if any(s == "success" for _, s in new.values()):
                break
            assert proc.poll() is None, "the runner ended before it was killed"
            time.sleep(3)
        else:
            pytest.fail("no new experiment finished in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    sh(["dvc", "queue", "stop", "--kill"], ws)  # the DVC workers die too: a crash of the whole run
    killed = {n: v for n, v in exps(ws).items() if n not in before}
    finished = {n: rev for n, (rev, s) in killed.items() if s == "success"}
    assert len(finished) == 1

    sh([sys.executable, "-m", "flows.study", "smoke"], ws, env=prefect_env)
    after = exps(ws)
    new = {n: v for n, v in after.items() if n not in before}
    assert len(new) == 2 and all(s == "success" for _, s in new.values())
    assert {n: after[n][0] for n in finished} == finished  # the finished one was not rerun
    assert all(after[n] == v for n, v in before.items())
    r = json.loads((ws / "studies/results/smoke.json").read_text())
    assert r["missing"] == [] and r["claims"][0]["n"] == 3
