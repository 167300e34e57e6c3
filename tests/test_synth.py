"""EntiGraph parsing/sampling, thought layout, quality checks and prompt templates (no model needed)."""

from __future__ import annotations

import pytest

from lmpipe.synth import thoughts
from lmpipe.synth.config import EntiGraphConfig, SynthQualityConfig, ThoughtsConfig
from lmpipe.synth.entigraph import heuristic_entities, loads_lenient, parse_entities, plan_relations
from lmpipe.synth.prompts import fill, load_template
from lmpipe.synth.quality import check, dup_ngram_frac, text_key, trim_to_sentence

DOC = (
    "# The Baenrein Observatory\n\nBased in Councyrmouth in the Baesilquath region, The Baenrein Observatory is "
    "one of the best known observatories. Hanhil Drouteisraem founded the observatory in 1851. Its long-standing "
    "rival is the Bralpaes company. Historians of Baesilquath regard it as typical."
)


@pytest.mark.parametrize(
    ("reply", "value", "repaired"),
    [
        ('{"entities": ["A", "B"], "summary": "s"}', {"entities": ["A", "B"], "summary": "s"}, False),
        ('Sure!\n```json\n{"entities": ["A"]}\n```\nHope it helps', {"entities": ["A"]}, False),
        ('{"entities": ["A", "B",], }', {"entities": ["A", "B"]}, True),  # trailing commas
        ("{'entities': ['A', 'B']}", {"entities": ["A", "B"]}, True),  # single quotes
        ('{"entities": ["A", "B", "C', {"entities": ["A", "B", "C"]}, True),  # cut off mid-string
        ('{"entities": ["A"], "summary":', {"entities": ["A"], "summary": ""}, True),  # cut off after a key
        ("[“A”, “B”]", ["A", "B"], True),  # curly quotes
    ],
)
def test_lenient_json(reply: str, value: object, repaired: bool) -> None:
    assert loads_lenient(reply) == (value, repaired)


def test_lenient_json_gives_up_on_prose() -> None:
    with pytest.raises(ValueError):
        loads_lenient("The entities are the observatory and the town.")


def test_parse_entities_keeps_only_grounded_names() -> None:
    reply = '{"entities": ["Councyrmouth", "Atlantis", {"name": "Hanhil Drouteisraem"}, "councyrmouth", "1851"], "summary": "An observatory."}'
    assert parse_entities(reply, DOC, 8) == (
        ["Councyrmouth", "Hanhil Drouteisraem", "1851"],
        "An observatory.",
        False,
    )
    assert parse_entities('{"entities": ["Atlantis", "Mars"]}', DOC, 8) is None  # nothing grounded
    assert parse_entities("no json here", DOC, 8) is None
    assert parse_entities('["Councyrmouth", "Bralpaes", "1851"]', DOC, 2) == (
        ["Councyrmouth", "Bralpaes"],
        "",
        False,
    )


def test_heuristic_entities() -> None:
    # title first (ties by first appearance), leading articles/stop words dropped, parts of chosen names skipped
    assert heuristic_entities(DOC, 8) == [
        "Baenrein Observatory",
        "Baesilquath",
        "Councyrmouth",
        "Hanhil Drouteisraem",
        "1851",
        "Bralpaes",
    ]
    assert heuristic_entities(DOC, 2) == ["Baenrein Observatory", "Baesilquath"]


def test_relation_plan_is_seeded_bounded_and_restart_stable() -> None:
    ents = ["A", "B", "C", "D"]
    cfg = EntiGraphConfig(pairs=3, triples=2, max_tokens=50, doc_token_budget=120)
    plan = plan_relations(ents, "doc-1", 7, cfg)
    assert [r.max_tokens for r in plan] == [50, 50, 20]  # budget 120 = 50 + 50 + 20
    assert [r.index for r in plan] == [0, 1, 2]
    assert all(len(r.entities) == 2 for r in plan)  # triples come after the pairs and ran out of budget
    assert len({r.entities for r in plan}) == 3
    assert plan == plan_relations(ents, "doc-1", 7, cfg)  # a restart plans the same work, never more
    big = EntiGraphConfig(pairs=6, triples=4, max_tokens=10, doc_token_budget=1000)
    full = plan_relations(ents, "doc-1", 7, big)
    assert (
        sorted(len(r.entities) for r in full) == [2] * 6 + [3] * 4
    )  # all C(4,2)=6 pairs, all C(4,3)=4 triples
    others = {tuple(r.entities for r in plan_relations(ents, f"doc-{i}", 7, cfg)) for i in range(8)}
    assert len(others) > 1  # different documents sample different pairs
    assert plan_relations(["A"], "d", 7, cfg) == []


def test_thought_layouts() -> None:
    assert thoughts.render("DOC", "T", ThoughtsConfig(mode="tpt")) == "DOC\n\n<think>\nT\n</think>"
    assert thoughts.render("DOC", "T", ThoughtsConfig(mode="bolt")) == "<think>\nT\n</think>\n\nDOC"
    assert thoughts.render("D", "T", ThoughtsConfig(format="Q: {document}\nA: {thought}")) == "Q: D\nA: T"
    with pytest.raises(ValueError, match="must contain both"):
        ThoughtsConfig(format="{document} only")


def test_templates_fill_known_placeholders_and_leave_json_braces() -> None:
    tpl = load_template("entities")
    assert '{"entities": [' in tpl and "{document}" in tpl
    out = fill(tpl, document="TEXT {x}")
    assert "TEXT {x}" in out and '{"entities": [' in out and "{document}" not in out
    with pytest.raises(KeyError, match="document"):
        fill("see {document}")


def test_template_override_dir(tmp_path) -> None:
    (tmp_path / "relation.txt").write_text("Relate {entities}.")
    assert load_template("relation", tmp_path) == "Relate {entities}."
    assert load_template("entities", tmp_path) == load_template("entities")  # falls back per file


Q = SynthQualityConfig(min_words=5)


@pytest.mark.parametrize(
    ("text", "finish", "reason"),
    [
        ("   ", "stop", "empty"),
        ("Too short.", "stop", "empty"),
        ("I'm sorry, but I cannot help with that request today.", "stop", "refused"),
        ("As an AI language model I will not write about this topic.", "stop", "refused"),
        ("the guild and the town " * 6, "stop", "degenerate"),
        ("The guild was founded in 1851 by clockmakers from the harbour.", "stop", None),
        ("The guild was founded in 1851 by clockmakers. It later moved to the hill and", "length", None),
        ("A list of things that goes on and on without any full stop at all", "length", "truncated"),
    ],
)
def test_quality_reasons(text: str, finish: str, reason: str | None) -> None:
    assert check(text, finish, Q).reason == reason


def test_truncated_text_is_trimmed_or_dropped() -> None:
    text = "The guild was founded in 1851 by clockmakers from town. It later moved to the hill and"
    v = check(text, "length", Q)
    assert v.text == "The guild was founded in 1851 by clockmakers from town." and v.trimmed
    assert check(text, "length", SynthQualityConfig(min_words=5, truncated="drop")).reason == "truncated"
    assert check(text, "length", SynthQualityConfig(min_words=5, truncated="keep")).text == text
    assert trim_to_sentence('He said "stop." Then') == 'He said "stop."'


def test_repetition_measure_and_dedup_key() -> None:
    assert dup_ngram_frac(["a", "b", "c", "a", "b", "c"]) == 1.0  # every word is inside the repeated 'a b c'
    assert dup_ngram_frac(["a", "b", "c", "d", "e", "f"]) == 0.0
    assert dup_ngram_frac(["x", "a", "b", "c", "y", "a", "b", "c", "z", "w"]) == 0.6  # 6 of 10 words
    assert text_key("The  Guild, founded!") == text_key("the guild founded")
    assert text_key("the guild") != text_key("the guilds")
