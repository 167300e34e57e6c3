"""Post-training data: readers, quarantine with reasons, decontamination, demo split, chat masks."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmpipe.demo import instruct, world
from lmpipe.demo.config import DemoConfig
from lmpipe.posttrain.config import EvalSet, InstructDemoConfig, InstructSource, PosttrainDataConfig
from lmpipe.posttrain.data import Chat, Pair, Prompt, read_source
from lmpipe.posttrain.decontam import clean


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_messages_quarantine_reasons(tmp_path):
    u = {"role": "user", "content": "hi"}
    a = {"role": "assistant", "content": "hello"}
    rows = [
        {"id": "ok", "messages": [u, a]},
        {"id": "ok-sys", "messages": [{"role": "system", "content": "be brief"}, u, a, u, a]},
        {"id": "norole", "messages": [{"content": "x"}, a]},
        {"id": "badrole", "messages": [{"role": "narrator", "content": "x"}, a]},
        {"id": "empty", "messages": [u, {"role": "assistant", "content": "  "}]},
        {"id": "twice", "messages": [u, u, a]},
        {"id": "ends-user", "messages": [u, a, u]},
        {"id": "nomsg"},
        "{not json",
    ]
    split = read_source(InstructSource(path=str(_write(tmp_path / "c.jsonl", rows)), format="messages"))
    assert [c.id for c in split.kept] == ["ok", "ok-sys"]
    reasons = {r.id: r.reason for r in split.rejected}
    assert reasons == {
        "norole": "missing_role",
        "badrole": "missing_role",
        "empty": "empty_turn",
        "twice": "non_alternating",
        "ends-user": "non_alternating",
        "nomsg": "missing_field",
        "c:9": "malformed_json",
    }
    c = split.counts()
    assert c["in"] == len(rows) == c["kept"] + sum(c["rejected"].values())


def test_alpaca_and_seed_tasks(tmp_path, shared_data):
    alpaca = tmp_path / "a.json"
    alpaca.write_text(
        json.dumps(
            [
                {"instruction": "Add", "input": "2 and 3", "output": "5"},
                {"instruction": "Say hi", "input": "", "output": "hi"},
                {"instruction": "No output", "input": ""},
            ]
        )
    )
    s = read_source(InstructSource(path=str(alpaca), format="alpaca"))
    assert [c.messages for c in s.kept] == [
        [{"role": "user", "content": "Add\n\n2 and 3"}, {"role": "assistant", "content": "5"}],
        [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}],
    ]
    assert [r.reason for r in s.rejected] == ["missing_field"]

    seed = shared_data / "alpaca" / "seed_tasks.jsonl"
    split = read_source(InstructSource(path=str(seed), format="alpaca_seed"))
    instances = sum(len(json.loads(line)["instances"]) for line in seed.read_text().splitlines())
    c = split.counts()
    assert c["in"] == instances == c["kept"] + sum(c["rejected"].values())
    assert c["kept"] >= 170 and all(isinstance(x, Chat) for x in split.kept)
    first = json.loads(seed.read_text().splitlines()[0])
    inst = first["instances"][0]
    want_user = first["instruction"].strip() + (
        f"\n\n{inst['input'].strip()}" if inst["input"].strip() else ""
    )
    assert split.kept[0].messages == [
        {"role": "user", "content": want_user},
        {"role": "assistant", "content": inst["output"]},
    ]


def test_hh_rlhf_pairs(tmp_path, shared_data):
    hh = shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    split = read_source(InstructSource(path=str(hh), format="hh_rlhf", max_records=300))
    c = split.counts()
    assert c["in"] == 300 == c["kept"] + sum(c["rejected"].values())
    assert c["kept"] > 250
    p = split.kept[0]
    raw = json.loads(gzip.decompress(hh.read_bytes()).decode().splitlines()[0])
    assert isinstance(p, Pair) and p.prompt[0]["role"] == "user" and p.prompt[-1]["role"] == "user"
    assert raw["chosen"].endswith(p.chosen) and raw["rejected"].endswith(p.rejected)
    assert raw["chosen"].startswith("\n\nHuman: " + p.prompt[0]["content"])

    bad = _write(
        tmp_path / "hh.jsonl",
        [
            {"chosen": "no turns here", "rejected": "\n\nHuman: a\n\nAssistant: b"},
            {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: other\n\nAssistant: c"},
            {
                "chosen": "\n\nHuman: a\n\nHuman: again\n\nAssistant: b",
                "rejected": "\n\nHuman: a\n\nAssistant: c",
            },
            {"chosen": "\n\nHuman: a\n\nAssistant: good", "rejected": "\n\nHuman: a\n\nAssistant: bad"},
        ],
    )
    s = read_source(InstructSource(path=str(bad), format="hh_rlhf"))
    assert [r.reason for r in s.rejected] == [
        "unparsable_transcript",
        "prompt_mismatch",
        "unparsable_transcript",
    ]
    assert [(k.chosen, k.rejected) for k in s.kept] == [("good", "bad")]


def test_prompts_and_pairs_formats(tmp_path):
    u = {"role": "user", "content": "2+2?"}
    path = _write(
        tmp_path / "p.jsonl",
        [
            {"id": "a", "messages": [u], "answer": "4", "kind": "math"},
            {"id": "b", "messages": [u, {"role": "assistant", "content": "4"}], "answer": "4"},
            {"id": "c", "messages": [u]},
        ],
    )
    s = read_source(InstructSource(path=str(path), format="prompts"))
    assert [(p.id, p.answer, p.kind) for p in s.kept if isinstance(p, Prompt)] == [("a", "4", "math")]
    assert {r.id: r.reason for r in s.rejected} == {"b": "non_alternating", "c": "missing_field"}


def test_decontamination_counts_per_eval_set(tmp_path):
    qa = _write(
        tmp_path / "qa.jsonl",
        [{"id": "q1", "question": "In which city is The Brax Observatory based?", "answer": "Braxford"}],
    )
    math = _write(
        tmp_path / "math.jsonl",
        [
            {
                "id": "m1",
                "question": "Ada has 3 apples and buys 4 boxes with 5 apples "
                "in each box. How many apples does Ada have now?",
                "answer": "23",
            }
        ],
    )
    chats = _write(
        tmp_path / "sft.jsonl",
        [
            {
                "id": "clean",
                "messages": [
                    {"role": "user", "content": "Where is The Brax Observatory?"},
                    {"role": "assistant", "content": "Braxford"},
                ],
            },
            {
                "id": "leak-qa",
                "messages": [
                    {"role": "user", "content": "In which city is The Brax Observatory based?"},
                    {"role": "assistant", "content": "Braxford"},
                ],
            },
            {
                "id": "leak-math",
                "messages": [
                    {
                        "role": "user",
                        "content": "Solve: Ada has 3 apples and buys 4 boxes with 5 "
                        "apples in each box. How many apples does Ada have now?",
                    },
                    {"role": "assistant", "content": "23"},
                ],
            },
        ],
    )
    cfg = PosttrainDataConfig(
        sft=[InstructSource(path=str(chats))], eval_sets=[EvalSet(path=str(qa)), EvalSet(path=str(math))]
    )
    split, stats = clean(read_source(cfg.sft[0]), cfg)
    assert [c.id for c in split.kept] == ["clean"]
    assert {r.id: r.reason for r in split.rejected} == {
        "leak-qa": "contaminated",
        "leak-math": "contaminated",
    }
    assert stats["contaminated_by_set"] == {"qa": 1, "math": 1} and stats["contaminated"] == 2


def test_demo_instruct_disjoint_from_eval(tmp_path):
    from lmpipe.demo.corpus import generate

    cfg = DemoConfig(
        prose_docs=5,
        code_docs=5,
        math_docs=5,
        fiction_entities=30,
        toxicity_examples=10,
        instruct=InstructDemoConfig(math_train=60, math_heldout=30, format_prompts=20),
    )
    summary = generate(cfg, 7, tmp_path / "raw", tmp_path / "eval")["instruct"]
    rows = lambda p: [json.loads(x) for x in p.read_text().splitlines()]  # noqa: E731
    sft, prompts = rows(tmp_path / "raw/instruct/sft.jsonl"), rows(tmp_path / "raw/instruct/prompts.jsonl")
    heldout, full_eval = rows(tmp_path / "eval/posttrain_qa.jsonl"), rows(tmp_path / "eval/fiction_qa.jsonl")
    assert summary["sft"] == len(sft) and summary["heldout_qa"] == len(heldout) > 0

    held_entities = {q["entity"] for q in heldout}
    train_entities = {r["entity"] for r in sft + prompts if "entity" in r}
    assert held_entities and train_entities and not held_entities & train_entities
    assert held_entities == instruct.heldout_entities([o.name for o in world.make_world(30, 7)], 0.3)
    assert len(held_entities) == 9
    assert (
        len(instruct.heldout_entities([f"e{i}" for i in range(6)], 0.3)) == 2
    )  # the tiny profile's world splits too
    assert (
        instruct.heldout_entities(["solo"], 0.3) == {"solo"}
        and len(instruct.heldout_entities(["a", "b"], 0.01)) == 1
        and len(instruct.heldout_entities(["a", "b"], 0.99)) == 1
    )
    # templates: no training question is worded like any evaluation question
    eval_prefixes = {q["question"].split(" The ")[0] for q in full_eval}
    train_questions = [
        m["content"] for r in sft + prompts if "entity" in r for m in r["messages"] if m["role"] == "user"
    ]
    assert train_questions and not any(q.split(" The ")[0] in eval_prefixes for q in train_questions)
    assert not {q["question"] for q in full_eval} & set(train_questions)
    # and the n-gram decontamination agrees: no fiction chat is flagged
    data = PosttrainDataConfig(
        sft=[InstructSource(path=str(tmp_path / "raw/instruct/sft.jsonl"))],
        eval_sets=[EvalSet(path=str(tmp_path / "eval/fiction_qa.jsonl"))],
    )
    _, stats = clean(read_source(data.sft[0]), data)
    assert stats["contaminated"] == 0


def test_chat_mask_matches_transformers_generation_markers(tmp_path):
    from transformers import AutoTokenizer

    from lmpipe.posttrain.chat import ensure_chat_template, tokenize_chat
    from lmpipe.tiny import build_tiny_model

    tok = AutoTokenizer.from_pretrained(build_tiny_model(tmp_path / "m"))
    assert tok.chat_template is None and ensure_chat_template(tok)
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is it?"},
        {"role": "assistant", "content": "Braxford"},
        {"role": "user", "content": "Who?"},
        {"role": "assistant", "content": "Ada Lovelace"},
    ]
    ids, mask = tokenize_chat(tok, msgs)
    ref = tok.apply_chat_template(msgs, return_dict=True, return_assistant_tokens_mask=True)
    assert ids == [tok.bos_token_id, *ref["input_ids"]]  # our models always start at their BOS
    assert mask == [0, *ref["assistant_masks"]]
    assert (
        tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
        == "Braxford<|im_end|>Ada Lovelace<|im_end|>"
    )
    assert not ensure_chat_template(tok)  # a tokenizer with a template keeps it


@pytest.mark.parametrize("fmt", ["messages", "alpaca"])
def test_missing_file_is_a_clear_error(tmp_path, fmt):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_source(InstructSource(path=str(tmp_path / "nope.jsonl"), format=fmt))
