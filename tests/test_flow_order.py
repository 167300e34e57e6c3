import yaml

from flows.pipeline import stage_order


def test_stage_order_follows_data_dependencies_then_file_order(tmp_path):
    stages = {
        "report": {"deps": ["metrics/eval.json"]},
        "train": {"deps": ["data/clean/docs", "models/tok"], "outs": ["models/lm"]},
        "clean": {"deps": ["data/raw/a.jsonl"], "outs": [{"data/clean/docs": {"persist": True}}]},
        "tok": {"deps": ["data/clean/docs"], "outs": ["models/tok"]},
        "raw": {"outs": ["data/raw"]},
        "eval": {"deps": ["models/lm"], "metrics": [{"metrics/eval.json": {"cache": False}}]},  # a metric is an output too
    }
    path = tmp_path / "dvc.yaml"
    path.write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    assert stage_order(path) == ["raw", "clean", "tok", "train", "eval", "report"]


def test_project_pipeline_starts_with_demo_and_ingest(project_root):
    order = stage_order(project_root / "dvc.yaml")
    assert order[:2] == ["demo", "ingest"]
    assert order.index("dedup") < order.index("refine") < order.index("tokenize") < order.index("evaluate")
    assert order[-1] == "report"  # it reads every stage's metrics file


def test_targets_run_with_their_upstream_closure(project_root):
    """As `dvc repro dedup`: the target and every stage it depends on, nothing downstream or beside it."""
    order = stage_order(project_root / "dvc.yaml", targets=["dedup"])
    # params.yaml scores with the learned rater: its labels and model are upstream of score
    assert order == ["demo", "ingest", "label", "rater", "score", "filter", "dedup"]
    cpt = stage_order(project_root / "dvc.yaml", targets=["cpt"])
    assert cpt[-1] == "cpt" and {"augment", "cpt_tokenize", "pretrain"} <= set(cpt)
    assert not {"sft", "evaluate", "report"} & set(cpt)  # nothing downstream of the target


def test_deployments_run_what_they_describe(project_root):
    """Each deployment in infra/prefect names the stages its description promises."""
    deployments = {d["name"]: d for d in yaml.safe_load((project_root / "infra/prefect/prefect.yaml").read_text())["deployments"]}
    data_only = stage_order(project_root / "dvc.yaml", targets=deployments["data-only"]["parameters"]["targets"])
    assert {"ingest", "filter", "dedup"} <= set(data_only) and "pretrain" not in data_only
    nightly = deployments["nightly"]["parameters"]
    assert stage_order(project_root / "dvc.yaml", targets=nightly.get("targets")) == stage_order(project_root / "dvc.yaml")
