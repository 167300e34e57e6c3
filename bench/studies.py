"""Study runner: experiments per hour with N DVC queue workers vs one, and the runner's overhead per experiment
vs a bare ``dvc exp run``.

A throwaway git + DVC workspace at the tiny profile with the data stages run and committed (as in
tests/test_studies_e2e.py); every experiment trains the tiny model (target ``pretrain``) with a seed no earlier
experiment used, so nothing is found in DVC and reused.

- ``bare``: ``dvc exp run --temp -S train.seed=K pretrain``, one after another: DVC alone, the peer.
- ``runner_1`` / ``runner_N``: a two-arm study of ``--exps``/2 seeds through ``lmpipe.studies.runner`` (plan, queue,
  ``dvc queue start -j``, wait, analyse) with 1 and N workers, as library calls (Prefect's start-up excluded).
- overhead per experiment = runner_1 seconds / exps − bare seconds per experiment.

    python bench/studies.py [--exps 2] [--jobs 2] [--repeats 3]

JSON goes to bench/results/studies.json (median and spread of each mode over the repeats).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from _common import rate, table, write_result  # noqa: E402

from lmpipe.config import deep_merge, read_yaml_mapping  # noqa: E402
from lmpipe.studies import experiments as ex  # noqa: E402
from lmpipe.studies import runner  # noqa: E402
from lmpipe.studies.spec import load_study  # noqa: E402

BIN = Path(sys.executable).parent


def sh(cmd: list[str], cwd: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "PYTHONPATH": os.pathsep.join(["src", ".", os.environ.get("PYTHONPATH", "")]),
    }
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{cmd} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def workspace(base: Path) -> Path:
    root = base / "ws"
    for d in ("src", "stages", "flows", "profiles"):
        shutil.copytree(ROOT / d, root / d, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for f in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / f, root)
    params = deep_merge(
        yaml.safe_load((ROOT / "params.yaml").read_text()), read_yaml_mapping(ROOT / "profiles/tiny.yaml")
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "studies").mkdir()
    for cmd in (
        ["git", "init", "-q"],
        ["dvc", "init", "-q"],
        ["dvc", "repro", "tokenize"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "tiny baseline"],
    ):
        sh(cmd, root)
    return root


def study_run(root: Path, seeds: list[int], jobs: int) -> float:
    (root / "studies" / "bench.yaml").write_text(
        yaml.safe_dump(
            {
                "title": "bench",
                "profile": "tiny",
                "target": "pretrain",
                "seeds": seeds,
                "jobs": jobs,
                "arms": {"a": {"control": True}, "b": {"params": {"train.lr": 1e-3}}},
                "metrics": {"val_loss": {"path": "pretrain.val_loss"}},
            }
        )
    )
    t = time.perf_counter()
    study = load_study("bench", root)
    p = runner.execute(study, root, runner.plan(study, root), jobs, poll_s=2.0, log=lambda _: None)
    runner.analyse(study, root, p)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--exps", type=int, default=2, help="experiments per measured run (even: 2 arms x exps/2 seeds)"
    )
    ap.add_argument("--jobs", type=int, default=2, help="parallel workers compared with one")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = workspace(Path(tmp))
        seed = iter(range(100, 10_000))
        # DVC's fast path: copy the uncached outputs too, or the temp workspace reruns the data stages
        copy = [arg for path in ex.copy_paths(root, "pretrain") for arg in ("-C", path)]
        times: dict[str, list[float]] = {"bare": [], "runner_1": [], f"runner_{a.jobs}": []}
        try:
            for _ in range(
                a.repeats
            ):  # modes interleaved per repeat: load on the shared machine hits all alike
                t = time.perf_counter()
                for _ in range(a.exps):
                    sh(
                        ["dvc", "exp", "run", "--temp", *copy, "-S", f"train.seed={next(seed)}", "pretrain"],
                        root,
                    )
                times["bare"].append(time.perf_counter() - t)
                times["runner_1"].append(study_run(root, [next(seed) for _ in range(a.exps // 2)], 1))
                times[f"runner_{a.jobs}"].append(
                    study_run(root, [next(seed) for _ in range(a.exps // 2)], a.jobs)
                )
        finally:
            subprocess.run([str(BIN / "dvc"), "queue", "stop", "--kill"], cwd=root, capture_output=True)
    write_result("studies", **result(times, a.exps, a.jobs, a.repeats))


def result(times: dict[str, list[float]], exps: int, jobs: int, repeats: int) -> dict:
    """The shared JSON form: experiments per hour per mode, each a stat over the repeats."""
    rows = {
        "study runner, 1 worker": {"experiments_per_hour": rate(exps * 3600, times["runner_1"])},
        f"study runner, {jobs} workers": {"experiments_per_hour": rate(exps * 3600, times[f"runner_{jobs}"])},
        "bare dvc exp run --temp": {"experiments_per_hour": rate(exps * 3600, times["bare"])},
    }
    bare = statistics.median(times["bare"]) / exps
    return {
        "input": {"profile": "tiny", "target": "pretrain", "experiments_per_run": exps,
                  "cores": os.cpu_count()},
        "tables": [table("experiments per hour (tiny profile up to pretrain)", "experiments_per_hour", rows,
                         ours=["study runner, 1 worker", f"study runner, {jobs} workers"],
                         peers=["bare dvc exp run --temp"])],
        "checks": {
            "speedup_jobs_vs_one": round(statistics.median(times["runner_1"])
                                         / statistics.median(times[f"runner_{jobs}"]), 2),
            "runner_overhead_per_experiment_s": round(statistics.median(times["runner_1"]) / exps - bare, 1),
        },
        "notes": ["the runner adds queue and worker start-up, `dvc exp show -A` polling and the analysis "
                  "per experiment; bare DVC runs one experiment per command"],
        "repeats": repeats,
    }


if __name__ == "__main__":
    main()
