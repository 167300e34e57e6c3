"""The kill -9 → resume harness shared by the stage tests: start a child, SIGKILL it mid-run, run it again to the
end, and run an uninterrupted twin for comparison. Children get the project on PYTHONPATH themselves (CI sets none).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lmpipe.documents import read_manifest
from tests.conftest import ROOT, stage_cmd


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}"}


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float, settle: float = 0.0) -> None:
    """SIGKILL ``proc`` once ``ready()`` holds (then ``settle`` s more); it must still be running until then."""
    deadline = time.time() + timeout
    while not ready():
        if proc.poll() is not None:
            err = proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            raise AssertionError(f"child exited ({proc.returncode}) before the kill point: {err}")
        assert time.time() < deadline, f"kill point not reached in {timeout} s"
        time.sleep(0.05)
    time.sleep(settle)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


# ---------------------------------------------------------------------------------------------- ingest
def ingest_killed_and_straight(root: Path, params: dict, timeout: float) -> tuple[int, dict]:
    """Stage ``ingest`` (as dvc.yaml runs it) in ``root/a`` killed after 3 finished units, then resumed, and
    uninterrupted in ``root/b``; both outputs must be byte-identical. Returns (units done before the kill,
    manifest)."""
    params_file = root / "params.yaml"
    params_file.write_text(json.dumps(params))  # JSON is YAML

    def cmd(out: Path) -> list[str]:
        return stage_cmd("ingest", params_file, out / "m.json", out=out / "docs", rejected=out / "rej")

    a, b = root / "a", root / "b"
    proc = subprocess.Popen(cmd(a), env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = a / ".state" / "docs"
    kill_when(proc, lambda: len(list(state.glob("*.json"))) >= 3, timeout)
    done_before = len(list(state.glob("*.json")))
    for out in (a, b):
        subprocess.run(cmd(out), env=child_env(), check=True, capture_output=True)
    ma, mb = read_manifest(a / "docs"), read_manifest(b / "docs")
    assert ma["sha256"] == mb["sha256"]
    assert sorted(p.name for p in (a / "docs").iterdir()) == sorted(p.name for p in (b / "docs").iterdir())
    return done_before, ma


# ---------------------------------------------------------------------------------------------- post-training
TRAIN_CHILD = """
import sys, time, json, torch
from transformers import TrainerCallback
from lmpipe.posttrain.config import PosttrainConfig
torch.set_num_threads(1)
class Slow(TrainerCallback):
    def on_step_end(self, args, state, control, **kw):
        time.sleep(float(sys.argv[3]))
stage, d = sys.argv[1], sys.argv[2]
post = PosttrainConfig.model_validate(json.loads(open(d + '/post.json').read()))
common = (post, d + '/base', d + '/out', d + '/ck', d + '/data', d + '/live')
if stage == 'sft':
    from lmpipe.posttrain.sft import train_sft
    s = train_sft(*common, 0, callbacks=[Slow()])
elif stage == 'dpo':
    from lmpipe.posttrain.dpo import train_dpo
    s = train_dpo(*common, d + '/refcache', 0, callbacks=[Slow()])
else:
    from lmpipe.posttrain.rlvr import train_rlvr
    s = train_rlvr(*common, 0, callbacks=[Slow()])
open(d + '/stats.json', 'w').write(json.dumps(s))
"""


def _train_child(stage: str, d: Path, slow: float, stderr: Any = subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", TRAIN_CHILD, stage, str(d), str(slow)],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def train_killed_and_straight(
    stage: str, killed: Path, straight: Path, kill_at: str, timeout: float, settle: float
) -> dict:
    """A post-training stage in ``killed`` (each a dir with ``post.json`` + ``base/``), slowed down and killed
    ``settle`` s after checkpoint ``kill_at`` is written, then resumed; ``straight`` runs uninterrupted.
    Returns the resumed run's stats."""
    # the straight twin shares nothing with the killed run, so it runs meanwhile, in the CPU the slowed run
    # leaves idle while it sleeps between steps
    # (its stderr goes to a file: a pipe nobody reads until the end could fill up and stall it)
    with open(straight / "stderr.txt", "wb") as twin_err:
        twin = _train_child(stage, straight, 0.0, stderr=twin_err)
    proc = _train_child(stage, killed, 0.5)
    kill_when(proc, lambda: (killed / "ck" / kill_at / "trainer_state.json").exists(), timeout, settle)
    assert not (killed / "out").exists()  # the export is complete or absent
    resumed = _train_child(stage, killed, 0.0)
    _, err = resumed.communicate(timeout=timeout)
    assert resumed.returncode == 0, err.decode()[-3000:]
    assert twin.wait(timeout) == 0, (straight / "stderr.txt").read_text()[-3000:]
    return json.loads((killed / "stats.json").read_text())


def curve(run: Path, name: str) -> list[tuple[int, float]]:
    rows = (run / f"live/plots/metrics/train/{name}.tsv").read_text().splitlines()[1:]
    return [(int(r.split("\t")[0]), float(r.split("\t")[1])) for r in rows]
