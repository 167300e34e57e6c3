import subprocess
import sys

import pytest
import yaml

from lmpipe.config import ConfigError, load_params, parse_params

SRC = [{"uri": "x.jsonl", "domain": "web"}]


def test_project_params_validate(project_root):
    p = load_params(project_root / "params.yaml")
    assert p.ingest.sources and p.run.executor.kind == "local"


def test_unknown_key_names_path_and_allowed_keys():
    with pytest.raises(ConfigError) as e:
        parse_params({"ingest": {"sources": SRC, "docs_per_shardz": 5}})
    msg = str(e.value)
    assert "ingest.docs_per_shardz: unknown key" in msg
    assert "docs_per_shard" in msg.split("allowed:")[1]


def test_wrong_type_and_range_and_choice_all_reported():
    raw = {
        "run": {"executor": {"kind": "spark", "workers": 0}},
        "ingest": {"sources": [{"uri": "a", "domain": "web", "format": "xml"}], "min_chars": "many"},
    }
    with pytest.raises(ConfigError) as e:
        parse_params(raw)
    msg = str(e.value)
    assert "4 problem(s)" in msg
    assert "run.executor.kind" in msg and "'local', 'dask' or 'ray'" in msg and "got 'spark'" in msg
    assert "run.executor.workers" in msg and "greater than or equal to 1" in msg
    assert "ingest.sources[0].format" in msg and "got 'xml'" in msg
    assert "ingest.min_chars" in msg


def test_cross_field_check():
    with pytest.raises(ConfigError, match="min_chars .* must be below max_chars"):
        parse_params({"ingest": {"sources": SRC, "min_chars": 10, "max_chars": 5}})


def test_cli_validate_exit_codes(tmp_path, project_root):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump({"ingest": {"sources": SRC, "bogus": 1}}))
    cmd = [sys.executable, "-m", "lmpipe.cli", "config", "validate", "--params"]
    r = subprocess.run([*cmd, str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "ingest.bogus: unknown key" in r.stderr
    ok = subprocess.run([*cmd, str(project_root / "params.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    show = subprocess.run([sys.executable, "-m", "lmpipe.cli", "config", "show", "run", "--params",
                           str(project_root / "params.yaml")], capture_output=True, text=True)
    assert yaml.safe_load(show.stdout)["run"]["executor"]["workers"] >= 1
