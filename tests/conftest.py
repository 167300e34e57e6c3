"""Shared fixtures. Real data comes from ``../shared/data`` through ``shared_data`` alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Under pytest-xdist (`make test` runs one worker per core) each worker and the stage processes it starts get
# one intra-op thread: two workers each spinning two torch threads on two cores run slower than one thread each.
# Set before any test module imports torch (it reads the variable once).
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")


def in_ci() -> bool:
    """CI (``.ci/run`` exports LMPIPE_CI=1; hosted CI sets CI=true): a check that cannot run is a failure there."""
    return os.environ.get("LMPIPE_CI", "").lower() in {"1", "true", "yes"} or os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip on a user's clone; fail in CI, where every check must run."""
    if in_ci():
        pytest.fail(f"{reason} [a skip is a failure in CI (LMPIPE_CI/CI set)]", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public corpora in ../shared/data (see its README); skips with a reason where absent (fails in CI)."""
    path = Path(os.environ.get("LMPIPE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not (path / "README.md").exists():
        skip_or_fail(f"real test data not found at {path} (set LMPIPE_SHARED_DATA)")
    return path


# ------------------------------------------------------------------ no silent skips in CI
# Any skip (a fixture's, an importorskip, a skip marker, a module skipped at collection) fails the session in
# CI, naming each skipped test and its reason. Expected failures (xfail) are not skips.
_SKIPPED: list[tuple[str, str]] = []


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    lr = report.longrepr
    return (str(lr[2]) if isinstance(lr, tuple) and len(lr) == 3 else str(lr)).removeprefix("Skipped: ")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        _SKIPPED.append((report.nodeid, _skip_reason(report)))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:
        _SKIPPED.append((report.nodeid, _skip_reason(report)))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if in_ci() and _SKIPPED and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    if in_ci() and _SKIPPED:
        terminalreporter.section("skipped tests fail in CI (LMPIPE_CI/CI set)", red=True, bold=True)
        for nodeid, reason in _SKIPPED:
            terminalreporter.line(f"SKIPPED IN CI: {nodeid}: {reason}", red=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """End-to-end tests first, the longest (``e2e(minutes=N)``) before the rest (stable otherwise): under xdist
    (loadfile) a worker takes files in this order, so a long file that starts late becomes the suite's tail."""

    def order(item: pytest.Item) -> tuple[bool, float]:
        mark = item.get_closest_marker("e2e")
        return mark is None, -(mark.kwargs.get("minutes", 0) if mark else 0)

    items.sort(key=order)


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
    """A fresh git + DVC repo holding this project's pipeline code, the given params and the ``dvc.yaml`` the
    registry renders for them (a few graph choices are params: the rater, cmr → cpt, the residual's models)."""
    import shutil
    import subprocess
    import sys

    import yaml

    for d in ("src", "stages", "flows", *extra):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc = str(Path(sys.executable).parent / "dvc")
    render = [sys.executable, "-m", "stages.registry", "--write"]  # the graph these params choose
    for cmd in (render, ["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"],
                ["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    return root
