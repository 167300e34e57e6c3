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
    assert order.index("dedup") < order.index("tokenize") < order.index("evaluate")
    assert order[-1] == "report"  # it reads every stage's metrics file
