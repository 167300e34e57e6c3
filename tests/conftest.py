"""Shared fixtures. Real data comes from ``../shared/data`` through ``shared_data`` alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public corpora in ../shared/data (see its README); skips with a reason where absent."""
    path = Path(os.environ.get("LMPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not (path / "README.md").exists():
        pytest.skip(f"real test data not found at {path} (set LMPIPE_SHARED_DATA); present in CI")
    return path


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


# Tools run by tests stay offline and quiet, as under `make`.
for _k, _v in {
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "AWS_EC2_METADATA_DISABLED": "true",
}.items():
    os.environ.setdefault(_k, _v)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc, timeout: float = 60.0) -> None:
    import socket
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on localhost; yields its endpoint URL with test credentials set."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def stage_cmd(stage: str, params_file: str | Path, metrics_file: str | Path, **paths: str | Path) -> list[str]:
    """The command dvc.yaml runs for ``stage`` (entry from the registry), with test paths, params and metrics."""
    import sys

    from stages.registry import by_name

    return [sys.executable, "-m", "stages", stage, by_name()[stage].entry, *(f"{k}={v}" for k, v in paths.items()),
            "--params", str(params_file), "--metrics", str(metrics_file)]


def make_workspace(root: Path, params: dict, extra: tuple[str, ...] = ()) -> Path:
    """A fresh git + DVC repo holding this project's pipeline code, ``dvc.yaml`` and the given params."""
    import shutil
    import subprocess

    import yaml

    for d in ("src", "stages", "flows", *extra):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "dvc.yaml", root)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = str(Path(__import__("sys").executable).parent / "dvc")
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root
