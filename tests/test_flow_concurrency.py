"""The pipeline flow runs independent DVC stages side by side, for real: Prefect (ephemeral API) over `dvc repro`."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
# A stage that records when it ran: "<start> <end>" into its output after sleeping; "fail" exits 1 at once.
STAMP = (
    "python -c \"import sys, time; t = time.time(); sys.exit(1) if sys.argv[2] == 'fail' else None; "
    "time.sleep(float(sys.argv[2])); open(sys.argv[1], 'w').write(f'{t} {time.time()}')\""
)


def stage(out: str, arg: str, deps: list[str]) -> dict:
    return {"cmd": f"{STAMP} {out} {arg}", "deps": deps, "outs": [out]}


def write_dvc_yaml(root: Path, b_arg: str) -> None:
    stages = {
        "a": stage("a.txt", "3", ["a.in"]),
        "b": stage("b.txt", b_arg, ["b.in"]),
        "c": stage("c.txt", "0", ["a.txt", "b.txt"]),
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))


def flow(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "PREFECT_HOME": str(root / ".prefect")}
    cmd = [sys.executable, "-m", "flows.pipeline", *args]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


def span(root: Path, name: str) -> tuple[float, float]:
    start, end = (float(x) for x in (root / name).read_text().split())
    return start, end


def test_independent_stages_run_side_by_side_and_a_failure_stops_what_follows(tmp_path):
    root = tmp_path
    shutil.copytree(ROOT / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("a.in", "b.in"):
        (root / f).write_text("1")
    write_dvc_yaml(root, "3")
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)

    r = flow(root, "--jobs", "2")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (a0, a1), (b0, b1), (c0, _) = span(root, "a.txt"), span(root, "b.txt"), span(root, "c.txt")
    assert a0 < b1 and b0 < a1, "a and b are independent: with two jobs they overlap"
    assert c0 >= max(a1, b1), "c starts only after both of its upstream stages"
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"a", "b", "c"}  # both concurrent writers' entries survived
    status = subprocess.run([str(BIN / "dvc"), "status"], cwd=root, capture_output=True, text=True)
    assert "up to date" in status.stdout

    # only a's input changed: b is known up to date from one `dvc status` (no dvc process of its own), while c,
    # which DVC's status alone calls unchanged, still goes through `dvc repro` because its upstream a reran
    (root / "a.in").write_text("2")
    c_before = span(root, "c.txt")
    r = flow(root, "--jobs", "2")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "[a] Running stage 'a'" in out and "b: up to date (dvc status)" in out and "[b]" not in out
    assert "[c] Running stage 'c'" in out and span(root, "c.txt") != c_before

    # b now fails at once while a (changed input) still runs: a finishes and is recorded, c never starts
    (root / "a.in").write_text("3")
    write_dvc_yaml(root, "fail")
    before_c = (root / "c.txt").read_text()
    r = flow(root, "--jobs", "2", "--retries", "0")
    assert r.returncode != 0 and "stage 'b' failed" in r.stdout + r.stderr
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    a_in = next(d for d in lock["a"]["deps"] if d["path"] == "a.in")
    assert a_in["md5"] == "eccbc87e4b5ce2fe28308fd9f2a7baf3"  # md5 of "3": a's new result was recorded
    assert (root / "c.txt").read_text() == before_c
    assert "not started: c" in r.stdout + r.stderr
