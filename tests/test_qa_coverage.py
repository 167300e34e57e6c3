"""Closed-book QA accuracy split by whether the synthetic (augment) documents mention the question's entity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmpipe.contract import run_stage
from lmpipe.documents import Document
from lmpipe.evaluation.qa import QAItem, coverage_split, covered_entities
from stages.registry import by_name
from tests.test_evaluation import ITEMS, corpus_docs, tiny_dir, write_docs  # noqa: F401


def test_covered_entities_whole_words_any_case() -> None:
    names = {"Orlan Company", "Zed", "The Guild of Varn", "Quill"}
    texts = [
        "the orlan company sold clocks to Zedd.",
        "Nothing here.",
        "Members of THE GUILD OF VARN met (Zed).",
    ]
    # "Zedd" is not "Zed"; "Quill" appears nowhere; case does not matter
    assert covered_entities(names, texts) == {"Orlan Company", "Zed", "The Guild of Varn"}
    assert covered_entities(set(), texts) == set()


def test_coverage_split_hand_computed() -> None:
    items = [
        QAItem(f"q{i}", title, "?", ["a", "b"], 0, entity)
        for i, (title, entity) in enumerate([("T1", "A"), ("T1", "A"), ("T2", "B"), ("T3", ""), ("T3", "")])
    ]
    rows = [{"pred": p, "gold": 0} for p in (0, 1, 0, 0, 0)]
    # covered: A (q0 right, q1 wrong) and T3 by its title (q3, q4 right) -> 3/4; not covered: B (q2 right) -> 1/1
    split = coverage_split(items, rows, {"A", "T3"})
    assert split == {
        "entities": 3,
        "entities_covered": 2,
        "covered": {"mc_accuracy": 0.75, "questions": 4},
        "not_covered": {"mc_accuracy": 1.0, "questions": 1},
    }


def test_evaluate_stage_splits_qa_by_coverage(tiny_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    heldout = write_docs(tmp_path / "docs", corpus_docs())
    synthetic = write_docs(
        tmp_path / "synthetic",
        [
            Document("s1", f"An essay on {ITEMS[0].title.lower()} and its city.", "synthetic", "t"),
            Document("s2", "Nothing about any organisation.", "synthetic", "t"),
        ],
    )
    qa = tmp_path / "qa.jsonl"
    qa.write_text(
        "".join(
            json.dumps(
                {
                    "id": it.id,
                    "title": it.title,
                    "question": it.question,
                    "choices": it.choices,
                    "answer_index": it.answer_index,
                }
            )
            + "\n"
            for it in ITEMS
        )
    )
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "ingest": {"sources": [{"uri": "x", "domain": "prose"}]},
                "evaluate": {"models": {"pretrain": str(tiny_dir)}, "qa": {"generate": False}},
            }
        )
    )
    out = tmp_path / "out"
    run_stage(
        "evaluate",
        by_name()["evaluate"].entry,
        {
            "heldout": str(heldout),
            "qa": str(qa),
            "synthetic": str(synthetic),
            "samples": str(out / "samples.jsonl"),
            "plots": str(out / "plots"),
        },
        str(params),
        str(out / "evaluate.json"),
    )
    qa_m = json.loads((out / "evaluate.json").read_text())["models"]["pretrain"]["qa"]
    cov = qa_m["coverage"]
    assert (cov["entities"], cov["entities_covered"]) == (2, 1)
    assert cov["covered"]["questions"] == cov["not_covered"]["questions"] == 1
    # the two halves recombine to the overall accuracy
    assert (cov["covered"]["mc_accuracy"] + cov["not_covered"]["mc_accuracy"]) / 2 == pytest.approx(
        qa_m["mc_accuracy"]
    )
    series = {r["series"] for r in json.loads((out / "plots" / "qa_accuracy.json").read_text())}
    assert {"pretrain · mc_accuracy_covered", "pretrain · mc_accuracy_not_covered"} <= series
