"""Studies end to end on a throwaway copy of the project: real DVC experiments (queue + workers), real Prefect.

The workspace (the learned rater off: the study does not vary it) is made the study's baseline by
``lmpipe study baseline``: the control's params (params.yaml + profiles/tiny.yaml, seed 1) with every stage
upstream of pretraining run and committed, so each experiment only trains (16 steps of a tiny model); the study
still passes the whole tiny profile as ``-S`` overrides, which DVC finds unchanged. The study is killed once an
experiment has finished, then resumed to the end: one set of four experiments proves both that a killed study
resumes and that a study runs end to end.
"""

import json
import os
import re
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

pytestmark = pytest.mark.e2e(minutes=6)
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
            if out.get(e["name"], ("", ""))[1] != "success":  # a finished run wins over a failed namesake
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
    params["filter"]["score"]["quality"]["enabled"] = False  # no LLM labelling: the study never varies it
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh([sys.executable, "-m", "stages.registry", "--write"], root)  # the graph without label/rater
    sh(["git", "init", "-q"], root)
    sh(["dvc", "init", "-q"], root)
    sh(["dvc", "config", "core.analytics", "false"], root)
    sh(["git", "add", "-A"], root)
    sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"], root)
    # the control's params with everything pretrain needs run and committed, so experiments only train
    who = {k: "t" for k in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")}
    out = sh([str(BIN / "lmpipe"), "study", "baseline", "smoke", "--upto", "tune"], root, env=who)
    assert "baseline committed on study/smoke" in out
    assert sh(["git", "status", "--porcelain"], root) == ""
    committed = yaml.safe_load(sh(["git", "show", "study/smoke:params.yaml"], root))
    assert committed["train"]["seed"] == 1 and committed["train"]["max_steps"] == 16  # control, seed 1, tiny
    assert (root / "data/tune/best_mixture.yaml").exists()
    yield root
    subprocess.run([str(BIN / "dvc"), "queue", "stop", "--kill"], cwd=root, capture_output=True)


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory):
    return {
        "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect")),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    }


@pytest.fixture(scope="module")
def killed(ws, prefect_env):
    """Start the study with one DVC worker; kill the runner and the DVC workers (a crash of the whole run) once
    an experiment has finished. Returns the finished experiments: name → rev (one, or more when the next ones
    finished before the kill landed: each takes seconds once pretraining's inputs are committed)."""
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
        while time.time() < deadline:  # DVC's queue, not `exp show` (which can race with a finishing worker)
            if re.search(r"\sSuccess\s*$", sh(["dvc", "queue", "status"], ws), re.MULTILINE):
                break
            assert proc.poll() is None, "the runner ended before it was killed"
            time.sleep(2)
        else:
            pytest.fail("no experiment finished in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    sh(["dvc", "queue", "stop", "--kill"], ws)
    # the DVC worker (a daemon of its own) may take the next task while it shuts down and leave it half-started:
    # `exp show` fails on it until the worker is gone and DVC marks it failed
    deadline = time.time() + 300
    while "Worker status: 0 active, 0 idle" not in (status := sh(["dvc", "queue", "status"], ws)):
        assert time.time() < deadline, status
        time.sleep(2)
    # `exp show` may fail on a half-taken task until the study runner marks it failed: read DVC's queue and the
    # experiments' git refs instead
    succeeded = re.findall(r"^\w+\s+(\S+)\s+.*\sSuccess\s*$", status, re.MULTILINE)
    refs = sh(["git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps"], ws).split()
    revs = {ref.rsplit("/", 1)[-1]: rev for ref, rev in zip(refs[::2], refs[1::2], strict=True)}
    assert 1 <= len(succeeded) < 4, status  # one worker: the rest were still queued, or running when killed
    return {n: revs[n] for n in succeeded}


@pytest.fixture(scope="module")
def resumed(ws, prefect_env, killed):
    """The killed study rerun to the end (two DVC workers): its output."""
    return sh([sys.executable, "-m", "flows.study", "smoke"], ws, env=prefect_env)


def test_killed_study_resumes_and_runs_end_to_end(ws, killed, resumed):
    assert "Finished in state Completed" in resumed
    found = exps(ws)
    names = [n for n in found if n.startswith("smoke-")]
    assert len(names) == 4 and all(found[n][1] == "success" for n in names)
    assert {n: found[n][0] for n in killed} == killed  # the experiment finished before the kill was kept

    r = json.loads((ws / "studies/results/smoke.json").read_text())
    assert r["missing"] == []
    # the values the study reports are those DVC holds for each experiment's commit
    show = {
        e["name"]: e["revs"][0]["data"]["metrics"]["metrics/pretrain.json"]["data"]["val_loss"]
        for b in json.loads(sh(["dvc", "exp", "show", "--json"], ws))
        for e in b.get("experiments") or []
        if ((e.get("executor") or {}).get("state") or "success") == "success"  # not the killed attempt
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
    assert claim["n"] == 2 and claim["ci"] == pytest.approx([ci.low, ci.high])
    assert claim["effect"] == pytest.approx(sum(a) / 2 - sum(b) / 2)
    assert claim["verdict"] == ("holds" if ci.low > 0 else "contradicted" if ci.high < 0 else "inconclusive")
    assert min(a) > max(b)  # 16 steps at lr 1e-5 barely move the loss
    # the curves come from the experiments' commits: 16 logged steps per run
    assert all(len(pts) == 16 for arm in r["curves"]["train_loss"].values() for pts in arm.values())
    page = (ws / "reports/studies/smoke.html").read_text()
    assert "data:image/png;base64," in page and "tiny_lr &gt; default" in page


def test_rerun_starts_no_experiment(ws, prefect_env, resumed):
    before, tasks = exps(ws), queue_tasks(ws)
    assert len(before) == 4
    out = sh([str(BIN / "lmpipe"), "study", "run", "smoke"], ws, env=prefect_env)
    assert "tiny_lr > default" in out
    assert exps(ws) == before and queue_tasks(ws) == tasks
