"""The stage contract: how DVC's ``cmd`` reaches a stage's library entry.

Every stage is one function ``run(p: Params, io: StageIO, ex: Executor) -> dict`` in a library module.
``python -m stages <stage> <module[:function]> name=path ...`` (written into ``dvc.yaml`` from the registry in
``stages/registry.py``) validates ``params.yaml``, calls the entry with the paths, runs the stage's
great-expectations gate when the stage declares one (an ``gate_report`` path), and writes
``metrics/<stage>.json`` with the stage's wall time. The paths arrive on the command line, so the registry is
not a dependency of any stage: adding a stage does not make the others stale.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lmpipe.config import ExecutorConfig, Params
    from lmpipe.executors import Executor

PARAMS_FILE = "params.yaml"
METRICS_DIR = "metrics"


class StageIO:
    """A stage's named paths (``io.docs``, ``io.out``); a missing name is a clear error, not ``None``."""

    def __init__(self, stage: str, paths: dict[str, str]) -> None:
        self._stage = stage
        self._paths = {k: Path(v) for k, v in paths.items()}

    def __getattr__(self, name: str) -> Path:
        try:
            return self.__dict__["_paths"][name]
        except KeyError:
            raise AttributeError(
                f"stage {self.__dict__.get('_stage')!r} was given no path {name!r} "
                f"(it has: {', '.join(self.__dict__['_paths']) or 'none'}); see stages/registry.py"
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._paths

    def get(self, name: str, default: Path | None = None) -> Path | None:
        return self._paths.get(name, default)

    def items(self) -> list[tuple[str, Path]]:
        return list(self._paths.items())


class StageEntry(Protocol):
    def __call__(self, p: Params, io: StageIO, ex: Executor) -> dict[str, Any]: ...


class LazyExecutor:
    """Builds the configured executor on first use, so a stage that never maps starts no Dask/Ray cluster."""

    def __init__(self, cfg: ExecutorConfig) -> None:
        self.cfg = cfg
        self._ex: Executor | None = None

    def map(self, fn, items, desc: str = ""):  # noqa: ANN001 - same signature as Executor.map
        if self._ex is None:
            from lmpipe.executors import make_executor

            self._ex = make_executor(self.cfg)
        return self._ex.map(fn, items, desc=desc)

    def close(self) -> None:
        if self._ex is not None:
            self._ex.close()


def write_metrics(path: str | Path, stats: dict[str, Any], seconds: float | None = None) -> None:
    """Write a DVC metrics file (JSON, sorted keys) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if seconds is not None:
        stats = {**stats, "seconds": round(seconds, 2)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(stats, indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def resolve(entry: str) -> StageEntry:
    module, _, func = entry.partition(":")
    return getattr(importlib.import_module(module), func or "run")


def parse_paths(args: list[str]) -> dict[str, str]:
    paths: dict[str, str] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not name.isidentifier() or not value:
            raise SystemExit(f"expected name=path, got {arg!r}")
        paths[name] = value
    return paths


def run_stage(stage: str, entry: str, paths: dict[str, str], params_file: str = PARAMS_FILE,
              metrics_file: str | None = None) -> dict[str, Any]:
    """Validate params, call the entry, gate its output if asked, write ``metrics/<stage>.json``."""
    from lmpipe.config import ConfigError, load_params

    try:
        p = load_params(params_file)
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    io = StageIO(stage, paths)
    ex = LazyExecutor(p.run.executor)
    start = time.perf_counter()
    try:
        stats = resolve(entry)(p, io, ex)
    finally:
        ex.close()
    failure = None
    if "gate_report" in io:
        from lmpipe.gates import GateError, check

        try:
            stats["gate"] = check(stage, io.out, stats, p.gates, io.gate_report)
        except GateError as err:
            stats["gate"], failure = err.summary, err
    write_metrics(metrics_file or Path(METRICS_DIR) / f"{stage}.json", stats, time.perf_counter() - start)
    if failure is not None:
        raise SystemExit(f"{stage}: {failure}")
    return stats


USAGE = """usage: python -m stages <stage> <module[:function]> [name=path ...] [--params FILE] [--metrics FILE]

Runs one pipeline stage as dvc.yaml does: validates params.yaml, calls run(p, io, ex) of the library entry
with the named paths, writes metrics/<stage>.json. `python -m stages.registry` lists the stages."""


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv) or len(argv) < 2:
        print(USAGE, file=sys.stderr)
        raise SystemExit(0 if argv else 2)
    options = {"--params": PARAMS_FILE, "--metrics": None}
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        key, sep, value = arg.partition("=")
        if key in options:
            options[key] = value if sep else next(it, None)
            if not options[key]:
                raise SystemExit(f"{key} needs a value")
        else:
            rest.append(arg)
    stats = run_stage(rest[0], rest[1], parse_paths(rest[2:]), options["--params"], options["--metrics"])
    summary = {k: v for k, v in stats.items() if isinstance(v, int | float | str) and not isinstance(v, bool)}
    print(f"{rest[0]}: " + " ".join(f"{k}={v}" for k, v in list(summary.items())[:12]))
