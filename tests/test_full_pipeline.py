"""The whole pipeline, every stage, through Prefect → DVC on a fresh workspace at the `tiny` profile.

This is CI's proof that the stages chain (the committed reference run shows the default profile). It checks
each stage's metrics against what the stage promises, the report, and that a rerun with nothing changed runs
no stage.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmpipe.config import deep_merge
from tests.conftest import ROOT, make_workspace

pytestmark = pytest.mark.e2e(minutes=9)
BIN = Path(sys.executable).parent


def sh(cmd, cwd, env=None, timeout=1500):
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    params = deep_merge(yaml.safe_load((ROOT / "params.yaml").read_text()),
                        yaml.safe_load((ROOT / "profiles/tiny.yaml").read_text()))
    params["cpt"]["replay_from_cmr"] = True  # exercise the chain cmr → cpt (off by default in params.yaml)
    root = make_workspace(tmp_path_factory.mktemp("pipeline"), params)
    prefect = {"PREFECT_HOME": str(root / ".prefect"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}
    out = sh([sys.executable, "-m", "flows.pipeline"], root, env=prefect)
    return root, out, prefect


def metrics(root: Path, stage: str) -> dict:
    return json.loads((root / "metrics" / f"{stage}.json").read_text())


def test_every_stage_ran_through_prefect_and_dvc(workspace):
    root, out, _ = workspace
    stages = list(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
    assert "Finished in state Completed" in out
    for stage in stages:
        assert f"Running stage '{stage}'" in out, stage
        assert (root / "metrics" / f"{stage}.json").exists(), stage
    assert "does not exist" not in sh(["dvc", "status"], root)


def test_data_stages_conserve_documents(workspace):
    root, _, _ = workspace
    for stage in ("ingest", "score", "filter", "dedup"):
        m = metrics(root, stage)
        assert m["in"] == m["kept"] + m["rejected"] + m.get("held", 0) > 0, stage
    assert metrics(root, "score")["in"] == metrics(root, "ingest")["kept"]
    # the pre-filter held-out sample (ingest.holdout): diverted at ingest, scored and judged beside the corpus
    held = metrics(root, "ingest")["held"]
    assert held > 0 and metrics(root, "score")["heldout"]["in"] == held
    judged = metrics(root, "filter")["heldout"]
    assert judged["in"] == held == judged["clean"] + judged["rejected"]
    refine = metrics(root, "refine")  # off by default: every deduplicated document passes through unchanged
    assert refine["in"] == refine["kept"] == refine["passed_through"] == metrics(root, "dedup")["kept"]
    assert metrics(root, "filter")["in"] == metrics(root, "score")["kept"]
    assert metrics(root, "dedup")["in"] == metrics(root, "filter")["kept"]
    for stage in ("ingest", "filter", "dedup"):
        assert metrics(root, stage)["gate"]["success"] is True


def test_quality_labels_rater_and_learned_scores(workspace):
    from lmpipe.documents import iter_documents

    root, _, _ = workspace
    lab = metrics(root, "label")
    assert lab["in"] == lab["kept"] + lab["rejected"] == 5 * 3  # tiny: 3 per domain
    assert lab["llm"]["requests"] > 0 and lab["llm"]["completion_tokens"] > 0
    assert metrics(root, "rater")["train"] >= 2
    scores = next(iter_documents(root / "data/scored/docs")).meta["scores"]
    assert {"quality", "q_educational_value", "q_professionalism"} <= set(scores)
    tox = metrics(root, "evaluate")["models"]["pretrain"]["toxicity"]
    assert tox["prompts"] == 8 and tox["prompt_source"].startswith("data/raw/labels/toxicity.jsonl")


def test_training_stages_follow_the_profile(workspace):
    root, _, _ = workspace
    pre, cpt = metrics(root, "pretrain"), metrics(root, "cpt")
    assert pre["steps"] == 16 and cpt["steps"] == 8 and cpt["parent"] == "models/pretrain"
    for model in ("pretrain", "cpt"):
        assert (root / "models" / model / "config.json").exists()
    assert metrics(root, "tune")["trials"]["complete"] >= 2
    # mixture.from_tune: pretrain trained on the study's winner, not on params.yaml's hand weights
    tuned = yaml.safe_load((root / "data/tune/best_mixture.yaml").read_text())["mixture"]["weights"]
    assert pre["mixture_from_tune"] is True and pre["mixture"] == pytest.approx(tuned)
    assert metrics(root, "augment")["kept"] > 0
    # stage cmr: the tiny grid (3 ratios x 2 step counts) fitted; cpt trained with its suggested replay ratio
    cmr = metrics(root, "cmr")
    assert cmr["points"] == 6 and 0.1 <= cmr["replay_ratio"] <= 0.6 and (root / "plots/cmr/fit.png").exists()
    replay = yaml.safe_load((root / "data/cmr/replay.yaml").read_text())["replay_ratio"]
    assert cpt["replay_from_cmr"] is True and cpt["mixture"]["synthetic"] == pytest.approx(1 - replay, abs=1e-5)


def test_evaluation_and_report(workspace):
    root, _, _ = workspace
    ev = metrics(root, "evaluate")
    assert ev["model_order"] == ["pretrain", "cpt", "sft", "dpo", "rlvr", "residual"]
    for m in ev["models"].values():
        assert m["heldout"] and m["qa"]["questions"] == 12
    assert "forgetting" in ev["models"]["cpt"]
    pretrain = ev["models"]["pretrain"]  # tiny: ingest.holdout.fraction 0.1, train.keep_steps [8]
    assert 0 < pretrain["heldout_prefilter"]["raw"]["all"]["docs"] <= metrics(root, "ingest")["held"]
    assert "heldout_prefilter" not in ev["models"]["cpt"]  # evaluate.prefilter.models: those without a parent
    assert list(pretrain["steps"]) == ["8"] and pretrain["steps"]["8"]["all"]["bits_per_byte"] > 0
    assert (root / "metrics/evaluate_steps.tsv").read_text().splitlines()[1].startswith("8\t")
    html = (root / "reports" / "index.html").read_text()
    assert "<html" in html and metrics(root, "report")["sections_missing"] == []


def test_posttraining_stages_chain(workspace):
    root, _, _ = workspace
    for stage, steps in (("sft", 4), ("dpo", 3), ("rlvr", 2)):
        m = metrics(root, stage)
        assert m["steps"] == steps and (root / "models" / stage / "config.json").exists(), stage
        assert m["data"]["in"] == m["data"]["kept"] + sum(m["data"]["rejected"].values()) > 0, stage
        assert m["data"]["decontamination"]["contaminated_by_set"]["fiction_qa"] == 0, stage
    assert metrics(root, "sft")["chat_template_added"] is True
    assert sum(metrics(root, "dpo")["data"]["pair_origin"].values()) == metrics(root, "dpo")["data"]["kept"]
    models = metrics(root, "evaluate")["models"]
    assert models["pretrain"]["posttrain"]["format"] == "plain" and models["rlvr"]["posttrain"]["format"] == "chat"
    assert "qa_exact_match" in models["sft"]["posttrain"] and "pref_accuracy" in models["dpo"]["posttrain"]
    # the instruction residual: cpt + (sft_base - pretrain), a chat model evaluated beside sft
    base, res = metrics(root, "sft_base"), metrics(root, "residual")
    assert base["steps"] == 4 and base["base_model"] == "models/pretrain"
    assert res["target"] == "models/cpt" and res["instruct"] == "models/sft_base" and res["residual_norm"] > 0
    assert models["residual"]["posttrain"]["format"] == "chat" and models["residual"]["forgetting"]["parent"] == "cpt"
    assert "Post-training" in (root / "reports" / "index.html").read_text()


def test_rerun_with_nothing_changed_runs_no_stage(workspace):
    root, _, prefect = workspace
    out = sh([sys.executable, "-m", "flows.pipeline"], root, env=prefect)
    assert "Running stage" not in out and "Finished in state Completed" in out
