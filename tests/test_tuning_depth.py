"""Optuna depth: pruning from intermediate target losses, and one study on a real PostgreSQL server filled by two
concurrent worker processes with exactly n COMPLETE trials and no duplicates."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch

from lmpipe.mixing.config import TuneConfig
from lmpipe.training.config import ModelConfig
from lmpipe.tuning import MixtureObjective, run_study
from tests.test_tuning import tiny_corpus  # noqa: F401 - the shared module fixture

torch.set_num_threads(1)
S = optuna.trial.TrialState


def test_pruning_stops_a_run_that_trains_on_the_wrong_domain(tiny_corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    cfg = TuneConfig(storage=f"sqlite:///{tmp_path / 'o.db'}", study_name="p", n_trials=3, heartbeat_s=None,
                     weights={"alpha": (0, 1), "beta": (0, 1)}, targets=["alpha"], steps=30, batch_size=4,
                     seq_len=32, warmup_steps=3, lr=1e-2,
                     heldout={"max_docs_per_domain": 4, "max_tokens_per_domain": 1000},
                     pruning={"enabled": True, "every": 10, "n_startup_trials": 2})
    model = ModelConfig(d_model=32, n_layers=1, n_heads=2, max_seq_len=64)
    objective = MixtureObjective(cfg, model, tiny_corpus / "tokens", tiny_corpus / "heldout",
                                 tiny_corpus / "tokenizer", seed=5, work_dir=tmp_path / "scratch")
    study = optuna.create_study(storage=cfg.storage, study_name="p", direction="minimize")
    # alpha only, half-half, beta only (trains on the wrong domain for the alpha target), alpha only again
    for a in (1.0, 0.5, 0.0, 1.0):
        study.enqueue_trial({"w_alpha": a, "w_beta": 1.0 - a})
    trials = run_study(cfg, objective, seed=5, study_name="p").get_trials()
    assert [t.state for t in trials] == [S.COMPLETE, S.COMPLETE, S.PRUNED, S.COMPLETE]
    assert list(trials[2].intermediate_values) == [10]  # stopped at its first report
    assert list(trials[0].intermediate_values) == [10, 20]  # a complete run reported at every `every` steps
    assert trials[2].intermediate_values[10] > max(trials[i].intermediate_values[10] for i in (0, 1))
    assert list((tmp_path / "scratch").iterdir()) == []  # the pruned run's scratch is gone too


# ------------------------------------------------------------------------------------------ PostgreSQL
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)
    if not found:  # not a skip: `make test` installs it (Makefile target `postgres`)
        pytest.fail(f"PostgreSQL's {name} is not installed: run `make postgres` (apt-get install postgresql)")
    return found


@pytest.fixture
def postgres() -> Iterator[str]:
    """A real PostgreSQL server as a normal process (initdb + pg_ctl, trust auth, a free port), stopped after."""
    root = Path(tempfile.mkdtemp(prefix="lmpipe-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    run = lambda *cmd: subprocess.run([*as_user, *cmd], check=True, capture_output=True, text=True)  # noqa: E731
    run(pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    run(pg_bin("pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


WORKER = """
import os, sys, time
from lmpipe.mixing.config import TuneConfig
from lmpipe.tuning import run_study

def objective(weights, lr):
    time.sleep(0.3)  # long enough for the two workers to interleave
    return {"value": (weights["alpha"] - 0.6) ** 2, "worker": os.getpid()}

cfg = TuneConfig(storage=sys.argv[1], study_name="shared", n_trials=int(sys.argv[2]), n_startup_trials=3,
                 heartbeat_s=2, weights={"alpha": (0.0, 1.0), "beta": (0.0, 1.0)}, targets=["alpha"])
run_study(cfg, objective, seed=11)
"""


def test_two_workers_fill_one_postgres_study_exactly(postgres: str) -> None:
    n = 10
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, postgres, str(n)], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=postgres)
    done = study.get_trials(states=(S.COMPLETE,))
    assert len(done) == n  # none lost, none extra
    assert not study.get_trials(states=(S.RUNNING, S.WAITING, S.FAIL))
    params = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(params)) == n  # no point evaluated twice
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers did share the work
    # anything else is a surplus claim stopped before training (a race between the two workers)
    assert all(t.user_attrs.get("surplus") for t in study.get_trials(states=(S.PRUNED,)))
