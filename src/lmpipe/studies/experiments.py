"""The DVC side of a study: queue (arm, seed) experiments, find finished ones, read their results.

Every experiment is ``dvc exp run --queue -S key=value ... --name NAME <target>``, run by ``dvc queue start -j N``
workers in temporary workspaces. NAME carries a hash of the overrides and of the code, so an unchanged
(arm, seed) is found again in ``dvc exp show --json -A`` (on any baseline commit: committing a study's
results does not invalidate it) and is never rerun, while an edited arm or changed code is a new experiment.
Results (params, metrics, curves) are read back from the experiments' commits, never from side files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lmpipe.studies.spec import Study

# What decides an experiment's result besides its overrides: the code and the pipeline definition.
CODE_PATHS = ("src", "stages", "dvc.yaml", "params.yaml")


class ExperimentError(RuntimeError):
    pass


@dataclass
class Experiment:
    name: str
    rev: str
    state: str  # success | queued | running | failed
    params: dict[str, Any] = field(default_factory=dict)  # params.yaml as the experiment ran it
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics file path → data


def _env(root: Path) -> dict[str, str]:
    # stage commands run inside each experiment's temp copy: its own src/ must win over an installed lmpipe
    bin_dir = str(Path(sys.executable).parent)
    pp = os.pathsep.join(p for p in ("src", ".", os.environ.get("PYTHONPATH", "")) if p)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": pp,
        "DVC_NO_ANALYTICS": "1",
    }


def dvc(root: Path, *args: str, check: bool = True) -> str:
    r = subprocess.run(["dvc", *args], cwd=root, env=_env(root), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise ExperimentError(
            f"dvc {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
        )
    return r.stdout


def code_fingerprint(root: Path) -> str:
    """Tree hashes of the committed code plus any uncommitted change to it (queued experiments carry both)."""
    restore_params(root)  # a killed workspace experiment must not change the names

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, check=True).stdout

    trees = git("rev-parse", *[f"HEAD:{p}" for p in CODE_PATHS if (root / p).exists()])
    diff = git("diff", "HEAD", "--", *CODE_PATHS)
    return hashlib.sha256((trees + diff).encode()).hexdigest()[:8]


def hydra_value(v: Any) -> str:
    """A Python value in DVC's ``-S`` (Hydra override) syntax; strings are quoted so '1234' stays a string."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return repr(v)
    if isinstance(v, float):
        text = repr(v)  # Hydra reads '1e-05' as a string: its floats need a '.' before the exponent
        mantissa, e, exp = text.partition("e")
        return f"{mantissa}.0e{exp}" if e and "." not in mantissa else text
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(v, list | tuple):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot pass {type(v).__name__} as a DVC param: {v!r}")


def set_args(overrides: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """``-S key=value`` per override; keys params.yaml lacks (defaults living in code) need Hydra's ``+``."""
    out = []
    for k, v in overrides.items():
        out += ["-S", f"{'' if has_key(base, k) else '+'}{k}={hydra_value(v)}"]
    return out


def has_key(d: Any, dotted: str) -> bool:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return False
        d = d[part]
    return True


def get_key(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        d = d[part]
    return d


def copy_paths(root: Path, target: str) -> list[str]:
    """Uncached outputs (``cache: false``) of the target's upstream stages that exist here: DVC does not store
    them, so without a copy a temporary workspace would see them missing and rerun stages that are done."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(".") as repo:  # DVC resolves a stage name against the cwd
        outs = {
            o.def_path
            for st in repo.stage.collect(target, with_deps=True)
            for o in st.outs
            if not o.use_cache
        }
    return sorted(p for p in outs if (root / p).exists())


def queue(root: Path, name: str, target: str, overrides: dict[str, Any], copy: list[str]) -> None:
    import yaml

    base = yaml.safe_load((root / "params.yaml").read_text()) or {}
    args = ["exp", "run", "--queue", "--name", name, *set_args(overrides, base)]
    for p in copy:
        args += ["-C", p]
    dvc(root, *args, target)


def run_in_workspace(root: Path, name: str, target: str, overrides: dict[str, Any]) -> None:
    """One experiment in this workspace, in the foreground: stages an earlier experiment left up to date are
    not rerun (what makes serial seeds cheap: only the stages a seed touches run again). params.yaml is put
    back afterwards so the next experiment starts from the same base (its own copy is in the experiment);
    the saved copy also survives a kill, and the next run restores it first."""
    import yaml

    params = root / "params.yaml"
    restore_params(root)
    saved = _saved_params(root)
    saved.parent.mkdir(parents=True, exist_ok=True)
    branch = subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=root, capture_output=True, text=True)
    (saved.parent / "HEAD").write_text(branch.stdout.strip())  # DVC detaches HEAD while it runs
    shutil.copy2(params, saved)
    try:
        dvc(
            root,
            "exp",
            "run",
            "--name",
            name,
            *set_args(overrides, yaml.safe_load(params.read_text()) or {}),
            target,
        )
    finally:
        restore_params(root)


def baseline(root: Path, study: Study, upto: list[str] | None = None) -> str:
    """Make this workspace a study's baseline commit: params.yaml := the control arm's first-seed params, its
    upstream run (``dvc repro``, the study's target unless ``upto``), committed on branch ``study/LABEL``.

    Why: after each experiment DVC puts ``HEAD``'s tracked files back, so every later experiment compares against
    ``HEAD``'s dvc.lock; when that is not this workspace's run (e.g. a committed reference run at another
    profile), every upstream stage reruns for every cell. From this baseline a cell reruns only what its
    overrides touch. Returns the branch name."""
    import yaml

    from lmpipe.studies.spec import set_dotted

    params = root / "params.yaml"
    data = yaml.safe_load(params.read_text()) or {}
    for key, value in study.overrides(study.control, study.seeds[0]).items():
        set_dotted(data, key, value)
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    dvc(root, "repro", *(upto or [study.target]))
    branch = f"study/{study.label}"

    def git(*a: str) -> None:
        subprocess.run(["git", *a], cwd=root, check=True, capture_output=True, text=True)

    current = subprocess.run(["git", "branch", "--show-current"], cwd=root, capture_output=True, text=True)
    if current.stdout.strip() != branch:
        git("switch", "-c", branch)
    git("add", "-A")
    git("commit", "-qm", f"study {study.label}: baseline = arm {study.control}, seed {study.seeds[0]}")
    return branch


def _saved_params(root: Path) -> Path:
    return root / ".dvc" / "tmp" / "studies" / "params.yaml"


def restore_params(root: Path) -> None:
    """Put back params.yaml as it was before a workspace experiment (a no-op when none was interrupted)."""
    saved = _saved_params(root)
    if saved.exists():
        os.replace(saved, root / "params.yaml")
    head = saved.parent / "HEAD"
    if head.exists():  # a killed `dvc exp run` leaves HEAD detached at the branch's commit: re-attach it
        ref = head.read_text().strip()
        git = ["git", "-C", str(root)]
        detached = subprocess.run([*git, "symbolic-ref", "-q", "HEAD"], capture_output=True).returncode != 0
        at = subprocess.run(
            [*git, "rev-parse", "HEAD", ref or "HEAD"], capture_output=True, text=True
        ).stdout.split()
        if ref and detached and len(at) == 2 and at[0] == at[1]:
            subprocess.run([*git, "symbolic-ref", "HEAD", ref], check=True)
        head.unlink()


def start_workers(root: Path, jobs: int) -> None:
    dvc(root, "queue", "start", "-j", str(jobs))


def remove_failed(root: Path, names: list[str]) -> None:
    if names:
        dvc(root, "queue", "remove", *names, check=False)


def fail_orphans(root: Path) -> list[str]:
    """Mark failed the tasks DVC lists as running while no queue worker is alive: a crash can leave one that a
    dying worker took but never started, and `dvc exp show` fails on its missing info file until it is marked
    (`dvc queue kill` of a task with no process does exactly that). Call it before starting workers."""
    status = dvc(root, "queue", "status")
    if "Worker status: 0 active, 0 idle" not in status:
        return []  # a live worker (ours or another run's) may be running them
    names = [m.group(1) for m in re.finditer(r"^\w+\s+(\S+)\s+.*\sRunning\s*$", status, re.MULTILINE)]
    if names:
        dvc(root, "queue", "kill", *names, check=False)
    return names


SHOW_ATTEMPTS = 5  # 1 + 2 + 4 + 8 s of waiting at most
SHOW_BACKOFF_S = 1.0


def show(root: Path) -> dict[str, Experiment]:
    """Every experiment DVC knows on any commit, by name (of namesakes: finished, else running, else queued)."""
    for attempt in range(SHOW_ATTEMPTS):
        try:
            out = dvc(root, "exp", "show", "--json", "-A", "--no-pager")
            break
        except ExperimentError:
            # DVC can list a running experiment's info file just as its worker finishes and removes it, and
            # after a crash it lists a task the killed worker had just taken until it marks the task failed
            # (ENOENT on .dvc/tmp/exps/run/<rev>/<rev>.run): a later look is consistent
            if attempt == SHOW_ATTEMPTS - 1:
                raise
            time.sleep(SHOW_BACKOFF_S * 2**attempt)
    data = json.loads(out or "[]")
    found: dict[str, Experiment] = {}
    for baseline in data:
        for exp in baseline.get("experiments") or []:
            rev = (exp.get("revs") or [{}])[0]
            d = rev.get("data") or {}
            executor = exp.get("executor") or {}
            state = executor.get("state") or ("failed" if rev.get("error") else "success")
            name = exp.get("name") or d.get("name") or rev.get("name")
            if not name:
                continue
            e = Experiment(
                name=name,
                rev=rev.get("rev", ""),
                state=state,
                params=((d.get("params") or {}).get("params.yaml") or {}).get("data") or {},
                metrics={p: m.get("data") or {} for p, m in (d.get("metrics") or {}).items()},
            )
            if name not in found or _RANK.get(e.state, 0) > _RANK.get(found[name].state, 0):
                found[name] = e
    return found


# Which of several namesakes counts: a resumed study requeues a failed cell under its old name, and DVC may
# still list the failed task beside the new one; the new one (queued or running) must be waited for.
_RANK = {"success": 3, "running": 2, "queued": 1}


def matches(exp: Experiment, overrides: dict[str, Any]) -> bool:
    """The experiment ran with every override (a guard on top of the name's hash)."""
    try:
        return all(_same(get_key(exp.params, k), v) for k, v in overrides.items())
    except (KeyError, TypeError):
        return False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def read_file(root: Path, rev: str, path: str) -> str | None:
    """A file as the experiment's commit holds it (metrics and plots with ``cache: false`` are committed)."""
    r = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True)
    return r.stdout if r.returncode == 0 else None


def logs(root: Path, name: str, tail: int = 40) -> str:
    out = dvc(root, "queue", "logs", name, check=False)
    return "\n".join(out.splitlines()[-tail:])
