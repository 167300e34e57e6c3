"""Scale-out proven: the same stages through Dask (a separate scheduler process) and Ray write byte-identical
datasets to the local process pool — ingest, then dedup with its MinHash LSH band files.

The Dask cluster is real: ``dask scheduler`` and ``dask worker`` run as their own processes on 127.0.0.1,
and the executor reaches them only through ``address``. Ray runs a local cluster (``ray`` is installed by
``make test``; its absence fails here rather than skipping).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lmpipe.config import ExecutorConfig
from lmpipe.dedup.config import DedupConfig
from lmpipe.dedup.passes import dedup
from lmpipe.demo.config import DemoConfig
from lmpipe.executors import DaskExecutor, Executor, LocalExecutor, RayExecutor, make_executor
from lmpipe.ingest import ingest
from lmpipe.ingest_config import IngestConfig, SourceConfig
from tests.conftest import free_port, wait_for_port


def files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (shards, manifests, band tables)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lmpipe.demo.corpus import generate

    root = tmp_path_factory.mktemp("demo")
    cfg = DemoConfig(prose_docs=120, code_docs=40, math_docs=80, fiction_entities=6, noise_fraction=0.2)
    generate(cfg, 1234, root / "raw", root / "eval")
    return root / "raw"


def run_stages(raw: Path, out: Path, ex: Executor) -> dict[str, dict[str, bytes]]:
    """ingest (several units: one per source file group) then dedup (sign shards in parallel, apply)."""
    icfg = IngestConfig(
        sources=[
            SourceConfig(uri=str(raw / "prose.jsonl.gz"), domain="prose"),
            SourceConfig(uri=str(raw / "fiction" / "*.md"), domain="fiction"),
            SourceConfig(uri=str(raw / "web" / "*"), domain="web"),
        ],
        docs_per_shard=40,
    )
    ingest(icfg, out / "ingest", out / "ingest_rej", ex)
    dedup(DedupConfig(docs_per_shard=40), out / "ingest", out / "dedup", out / "dedup_rej", ex, out / "work")
    return {d: files(out / d) for d in ("ingest", "ingest_rej", "dedup", "dedup_rej", "work")}


@pytest.fixture(scope="module")
def reference(raw: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    ref = run_stages(raw, tmp_path_factory.mktemp("local"), LocalExecutor(2))
    assert len(ref["ingest"]) > 3 and any("band" in k or "sig" in k for k in ref["work"]), list(ref["work"])
    return ref


def assert_identical(got: dict[str, dict[str, bytes]], ref: dict[str, dict[str, bytes]]) -> None:
    for d, expected in ref.items():
        assert sorted(got[d]) == sorted(expected), d
        differ = [k for k in expected if got[d][k] != expected[k]]
        assert not differ, f"{d}: {differ}"


@pytest.fixture()
def dask_address() -> Iterator[str]:
    """A scheduler and a 2-process worker, each its own OS process, on 127.0.0.1."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    dask = str(Path(sys.executable).parent / "dask")  # the CLI a user runs: `dask scheduler`, `dask worker`
    sched = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address", ":0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = None
    try:
        wait_for_port(port, sched)
        worker = subprocess.Popen(
            [
                dask,
                "worker",
                f"tcp://127.0.0.1:{port}",
                "--nworkers",
                "2",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--host",
                "127.0.0.1",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        yield f"tcp://127.0.0.1:{port}"
    finally:
        for proc in (worker, sched):
            if proc is not None:
                proc.terminate()
                proc.wait(30)


def test_dask_scheduler_address_is_byte_identical_to_local(
    raw: Path, reference, dask_address: str, tmp_path: Path
) -> None:
    ex = make_executor(ExecutorConfig(kind="dask", address=dask_address, workers=2))
    assert isinstance(ex, DaskExecutor) and ex._cluster is None  # the external scheduler, not a LocalCluster
    try:
        ex.client.wait_for_workers(2, timeout=120)
        assert len(ex.client.scheduler_info()["workers"]) == 2
        got = run_stages(raw, tmp_path, ex)
    finally:
        ex.close()
    assert_identical(got, reference)


def test_ray_is_byte_identical_to_local(raw: Path, reference, tmp_path: Path) -> None:
    ex = make_executor(ExecutorConfig(kind="ray", workers=2))
    assert isinstance(ex, RayExecutor)
    try:
        got = run_stages(raw, tmp_path, ex)
    finally:
        ex.close()
    assert_identical(got, reference)
