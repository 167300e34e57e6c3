"""kill -9 during dedup (signing pass, then writing pass), rerun: output identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmpipe.documents import Document, ShardWriter, write_manifest

RUN = """
import sys
from lmpipe.dedup.config import DedupConfig
from lmpipe.dedup.passes import dedup
from lmpipe.executors import LocalExecutor
src, dst = sys.argv[1], sys.argv[2]
dedup(DedupConfig(batch_docs=100), src, dst + "/docs", dst + "/rejected", LocalExecutor(1), dst + "/work")
"""


def _corpus(path: Path, shards: int = 30, per_shard: int = 120) -> None:
    rng = random.Random(11)
    vocab = [f"w{i}" for i in range(5000)]
    docs, pool = [], []
    for i in range(shards * per_shard):
        if pool and rng.random() < 0.15:  # exact and near copies of earlier documents, across shards
            words = rng.choice(pool).split()
            words[rng.randrange(len(words))] = "edited"
            text = " ".join(words) if rng.random() < 0.5 else " ".join(words).upper()
        else:
            text = " ".join(rng.choice(vocab) for _ in range(rng.randint(150, 400)))
            pool.append(text)
        docs.append(Document(f"d{i:06d}", text, "prose", "synthetic"))
    with ShardWriter(path, "part", docs_per_shard=per_shard) as w:
        w.write_all(docs)
    write_manifest(path, w.shards)


def _start(src: Path, dst: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-c", RUN, str(src), str(dst)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 120) -> bool:
    """SIGKILL ``proc`` as soon as ``ready()``; False if it finished first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("dedup neither finished nor reached the kill point")


def _outputs(dst: Path) -> dict:
    out = {}
    for part in ("docs", "rejected"):
        m = json.loads((dst / part / "manifest.json").read_text())
        out[part] = (m["sha256"], m["docs"], sorted(p.name for p in (dst / part).iterdir()))
    return out


@pytest.mark.e2e
def test_kill9_then_rerun_gives_identical_output(tmp_path: Path) -> None:
    src = tmp_path / "in"
    _corpus(src)
    ref = tmp_path / "ref"
    assert subprocess.run([sys.executable, "-c", RUN, str(src), str(ref)], capture_output=True).returncode == 0

    dst = tmp_path / "resumed"
    sign_dir = dst / "work" / "sign"
    signed = lambda: sign_dir.exists() and sum(1 for p in sign_dir.iterdir() if not p.name.endswith(".tmp")) >= 10  # noqa: E731
    assert _kill_when(_start(src, dst), signed), "finished before the kill: make the corpus larger"
    assert not (dst / "docs" / "manifest.json").exists()

    markers = dst / ".state" / "docs"  # run_stage's resume markers: the write pass is under way
    writing = lambda: markers.exists() and sum(1 for p in markers.glob("*.json")) >= 5  # noqa: E731
    _kill_when(_start(src, dst), writing)  # may finish first on a fast machine; the first kill is the key one

    final = subprocess.run([sys.executable, "-c", RUN, str(src), str(dst)], capture_output=True, text=True)
    assert final.returncode == 0, final.stderr[-2000:]
    assert _outputs(dst) == _outputs(ref)
    ref_manifest = json.loads((ref / "docs" / "manifest.json").read_text())
    assert ref_manifest["docs"] < 30 * 120  # duplicates were removed, so the comparison is meaningful
