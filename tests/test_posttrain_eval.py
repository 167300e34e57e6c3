"""Post-training evaluation rows (chat vs plain prompting) and the report's side-by-side table."""

from __future__ import annotations

import json
import re
import string

import torch

from lmpipe.posttrain.config import PosttrainEvalConfig
from lmpipe.tiny import build_tiny_model


def _norm(s: str) -> str:  # SQuAD normalisation, written out independently
    s = s.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", s).split())


def test_posttrain_metrics_on_chat_and_plain_models(tmp_path):
    from lmpipe.evaluation.lm import LM
    from lmpipe.posttrain.evaluate import posttrain_metrics

    torch.set_num_threads(1)
    qa = [
        {"id": f"q{i}", "question": f"Who founded The Org{i} Company?", "answer": f"Ada {i}"}
        for i in range(5)
    ]
    math = [
        {"id": f"m{i}", "question": f"What is {i} plus 2?", "answer": f"Work.\n#### {i + 2}"}
        for i in range(4)
    ]
    pairs = [
        {"id": f"p{i}", "question": f"Pick {i}", "chosen": "yes", "rejected": "no no no"} for i in range(3)
    ]
    for name, rows in (("qa", qa), ("gsm", math), ("pairs", pairs)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert not PosttrainEvalConfig().enabled  # nothing named, nothing measured
    cfg = PosttrainEvalConfig(
        qa=str(tmp_path / "qa.jsonl"),
        math=[str(tmp_path / "gsm.jsonl")],
        pairs=str(tmp_path / "pairs.jsonl"),
        max_new_tokens=6,
        samples=10,
    )
    for chat in (True, False):
        lm = LM.load(build_tiny_model(tmp_path / f"m{chat}", chat=chat), name="m")
        res, samples = posttrain_metrics(lm, cfg, batch_size=4)
        assert res["format"] == ("chat" if chat else "plain")
        qa_rows = [s for s in samples if s["kind"] == "posttrain_qa"]
        assert len(qa_rows) == 5 and res["qa_questions"] == 5
        for s in qa_rows:
            assert s["correct"] == (_norm(s["completion"].split("\n")[0]) == _norm(s["answer"]))
        assert res["qa_exact_match"] == sum(s["correct"] for s in qa_rows) / 5
        gsm = [s for s in samples if s["kind"] == "posttrain_math"]
        assert [s["answer"] for s in gsm] == ["2", "3", "4", "5"]  # the GSM8K '#### n' gold is read as n
        assert 0 <= res["math_accuracy_gsm"] <= 1 and res["pairs"] == 3 and 0 <= res["pref_accuracy"] <= 1
        assert res["response_chars_mean"] == round(sum(len(s["completion"]) for s in qa_rows + gsm) / 9, 2)


def test_report_puts_models_side_by_side():
    from lmpipe.report_eval import posttrain_section

    ev = {
        "models": {
            "pretrain": {
                "posttrain": {
                    "qa_exact_match": 0.0,
                    "math_accuracy_math_heldout": 0.0,
                    "pref_accuracy": 0.4,
                    "format": "plain",
                }
            },
            "sft": {
                "posttrain": {
                    "qa_exact_match": 0.25,
                    "math_accuracy_math_heldout": 0.1,
                    "pref_accuracy": 0.6,
                    "format": "chat",
                }
            },
            "dpo": {
                "posttrain": {
                    "qa_exact_match": 0.3,
                    "math_accuracy_math_heldout": 0.2,
                    "pref_accuracy": 0.8,
                    "format": "chat",
                }
            },
        }
    }
    sec = posttrain_section(ev)
    table = sec.tables[0]
    assert table.columns == ["metric", "pretrain", "sft", "dpo"]
    rows = {r[0]: r[1:] for r in table.rows}
    assert rows["held-out QA exact match"] == ["0", "0.25", "0.3"]
    assert rows["preference accuracy (held-out pairs)"] == ["0.4", "0.6", "0.8"]
    assert "math accuracy: math_heldout" in rows and sec.figures
    assert posttrain_section({"models": {"x": {}}}).missing
