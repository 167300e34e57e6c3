"""The stage contract: dvc.yaml is generated from the registry, and each stage's code deps cover everything it runs."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from lmpipe.contract import StageIO, parse_paths
from lmpipe.importgraph import closure
from stages.registry import ROOT, STAGES, render


def dvc_stages() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def test_dvc_yaml_is_generated_from_the_registry():
    assert (ROOT / "dvc.yaml").read_text() == render(), "run `python -m stages.registry --write`"


def test_known_drift_is_covered():
    """The deps that hand-written dvc.yaml had lost (issue 10): each edit must make the stage stale."""
    deps = {name: set(s["deps"]) for name, s in dvc_stages().items()}
    for name in deps:
        assert "src/lmpipe/config.py" in deps[name], name
    assert {"src/lmpipe/model.py", "src/lmpipe/schedules.py", "src/lmpipe/evaluation/lm.py"} <= deps["tune"]
    assert {"src/lmpipe/filters/toxicity.py"} <= deps["evaluate"]


# One interpreter imports the heavy third-party libraries once, then forks a child per entry module: each child
# starts with no project module loaded (a fresh import of the entry), without paying torch's import each time.
LOADED_BY_ENTRY = """
import importlib, json, os, sys
for lib in ("numpy", "torch", "transformers", "pyarrow", "lightning", "datasets", "trl"):
    try:
        importlib.import_module(lib)
    except ImportError:
        pass
assert not any(m.startswith("lmpipe") for m in sys.modules), "a third-party import loaded the project"
out = {}
for module in sys.argv[1:]:
    r, w = os.pipe()
    if (pid := os.fork()) == 0:
        os.close(r)
        import lmpipe.contract  # noqa: F401 - what `python -m stages` loads before the entry
        importlib.import_module(module)
        files = sorted(m.__file__ for m in list(sys.modules.values())
                       if getattr(m, "__file__", None) and "/src/lmpipe/" in m.__file__)
        os.write(w, json.dumps(files).encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out[module] = json.loads(f.read())
    assert os.waitpid(pid, 0)[1] == 0, module
print(json.dumps(out))
"""


def test_runtime_imports_are_within_deps():
    """Independent of the AST walk: import each entry in a fresh interpreter state, then call nothing; every
    project file Python loaded must be a declared dep of that stage."""
    stages = dvc_stages()
    entry = {name: stage["cmd"].split()[4].partition(":")[0] for name, stage in stages.items()}
    out = subprocess.run([sys.executable, "-c", LOADED_BY_ENTRY, *sorted(set(entry.values()))], cwd=ROOT,
                         capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin"})
    loaded = {m: {str(Path(f).resolve().relative_to(ROOT)) for f in files}
              for m, files in json.loads(out.stdout).items()}
    assert set(loaded) == set(entry.values())
    for name, stage in stages.items():
        assert "src/lmpipe/contract.py" in loaded[entry[name]]
        missing = loaded[entry[name]] - set(stage["deps"])
        assert not missing, f"stage {name}: imports not in its deps: {sorted(missing)}"


def test_closure_follows_lazy_relative_and_package_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import x\n")
    (pkg / "sub" / "leaf.py").write_text("x = 1\n")
    (pkg / "lazy.py").write_text("y = 2\n")
    (pkg / "unused.py").write_text("z = 3\n")
    (pkg / "entry.py").write_text(textwrap.dedent("""
        import json
        from pkg import sub
        def f():
            from . import lazy  # deferred on purpose: still code the stage runs
            return lazy.y
    """))
    got = {str(p.relative_to(tmp_path)) for p in closure(["pkg.entry"], tmp_path)}
    assert got == {"pkg/__init__.py", "pkg/entry.py", "pkg/sub/__init__.py", "pkg/sub/leaf.py", "pkg/lazy.py"}


def test_registry_paths_are_written_once():
    """Each output path belongs to one stage; io names are identifiers the entry can read."""
    seen: dict[str, str] = {}
    for s in STAGES:
        for k, v in s.io().items():
            assert k.isidentifier()
            if k in s.outputs:
                assert v not in seen, f"{v} written by {seen.get(v)} and {s.name}"
                seen[v] = s.name


def test_stage_io_names_a_missing_path_clearly():
    io = StageIO("filter", parse_paths(["out=data/x"]))
    assert io.out == Path("data/x")
    with pytest.raises(AttributeError, match="stage 'filter' was given no path 'scored'"):
        _ = io.scored
    with pytest.raises(SystemExit, match="expected name=path"):
        parse_paths(["data/x"])


def test_generic_entry_runs_a_stage_and_writes_metrics(tmp_path):
    """`python -m stages demo lmpipe.demo.corpus ...` as DVC runs it: params validated, metrics written with seconds."""
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"ingest": {"sources": [{"uri": "x", "domain": "x"}]},
                                  "demo": {"prose_docs": 3, "code_docs": 2, "math_docs": 2, "fiction_entities": 1}}))
    cmd = [sys.executable, "-m", "stages", "demo", "lmpipe.demo.corpus", f"raw={tmp_path / 'raw'}", f"eval={tmp_path / 'eval'}",
           "--params", str(params), "--metrics", str(tmp_path / "m.json")]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["seconds"] >= 0 and (tmp_path / "eval" / "fiction_qa.jsonl").exists()
    params.write_text(json.dumps({"ingest": {"sources": [{"uri": "x", "domain": "x"}]}, "demo": {"prose_docs": -1}}))
    bad = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "demo.prose_docs" in bad.stderr
