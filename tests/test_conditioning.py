"""Conditioning instead of filtering: PHF control tokens land where the stored score says and are reserved
single ids; MeCo's metadata prefix disappears exactly at the cooldown boundary and resumes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from lmpipe.conditioning.config import ConditionConfig
from lmpipe.conditioning.control import segments
from lmpipe.conditioning.meco import boundary_windows
from lmpipe.documents import Document, ShardWriter, write_manifest
from lmpipe.executors import LocalExecutor
from lmpipe.mixing.config import MixtureConfig
from lmpipe.mixture import TokenIndex
from lmpipe.tokenization import tokenize_corpus
from lmpipe.tokenization_config import TokenizeConfig
from lmpipe.training.data import mixture_samplers

WORDS = [
    "amber",
    "birch",
    "cedar",
    "delta",
    "ember",
    "fjord",
    "grove",
    "heath",
    "inlet",
    "juniper",
    "kestrel",
    "linden",
    "meadow",
]
BAD = "anilingus"  # on the shipped LDNOOBW list


def write_docs(directory: Path, docs: list[Document]) -> Path:
    with ShardWriter(directory, "part", docs_per_shard=1000) as w:
        w.write_all(docs)
    write_manifest(directory, w.shards)
    return directory


def pack(tmp: Path, docs_dir: Path, condition: dict) -> tuple[dict, Path]:
    cfg = TokenizeConfig(vocab_size=300, val_fraction=0.0, min_frequency=1)
    out = tmp / "out"
    stats = tokenize_corpus(
        cfg,
        docs_dir,
        out / "tokens",
        out / "tokenizer",
        out / "heldout",
        LocalExecutor(1),
        condition=ConditionConfig.model_validate(condition),
    )
    return stats, out


def doc_runs(out: Path, split: str = "train", domain: str = "prose") -> tuple[list[list[int]], Tokenizer]:
    """The packed stream of one split/domain cut at EOS: one id list per document, in dataset order."""
    index = TokenIndex.load(out / "tokens")
    ids = index.stream(domain, split).read(0, index.tokens(domain, split)).tolist()
    docs, cur = [], []
    for i in ids:
        if i == index.eos_id:
            docs.append(cur)
            cur = []
        else:
            cur.append(i)
    assert cur == []
    return docs, Tokenizer.from_file(str(out / "tokenizer" / "tokenizer.json"))


def test_control_tokens_are_reserved_and_land_where_the_score_says(tmp_path: Path) -> None:
    # tox_classifier = i/20 for doc i; lower is better; best 75% good: P75 of {0, .05, ..., .95} = 0.7125,
    # so docs 0..14 get <|good|> and docs 15..19 <|bad|>. Doc 3 literally contains "<|bad|>": it stays text.
    docs = [
        Document(
            f"d{i:02d}",
            " ".join(WORDS[(i + k) % len(WORDS)] for k in range(6)) + (" <|bad|> literal" if i == 3 else ""),
            "prose",
            "t",
            {"tox_classifier": i / 20},
        )
        for i in range(20)
    ]
    stats, out = pack(tmp_path, write_docs(tmp_path / "docs", docs), {"control": {"enabled": True}})
    runs, tok = doc_runs(out)
    good, bad = tok.token_to_id("<|good|>"), tok.token_to_id("<|bad|>")
    assert good is not None and bad is not None and good != bad
    assert [r[0] for r in runs] == [good] * 15 + [bad] * 5
    for doc, run in zip(docs, runs, strict=True):
        assert good not in run[1:] and bad not in run[1:]  # exactly one control token per document
        assert tok.decode(run[1:], skip_special_tokens=False) == doc.text
    assert stats["condition"]["control"]["pieces"] == {"<|bad|>": 5, "<|good|>": 15}
    assert stats["condition"]["control"]["cuts"] == pytest.approx([0.7125])
    # a peer (transformers) reads the saved tokenizer with both tokens as single reserved ids
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    assert hf("<|good|> amber", add_special_tokens=False)["input_ids"][0] == good
    assert {"<|good|>", "<|bad|>"} <= set(hf.all_special_tokens)


def test_a_reused_tokenizer_gains_the_control_tokens_as_single_ids(tmp_path: Path) -> None:
    docs = [Document(f"d{i}", f"{WORDS[i]} {WORDS[i + 1]}", "prose", "t", {"tox_classifier": i}) for i in range(8)]
    src = write_docs(tmp_path / "docs", docs)
    _, plain = pack(tmp_path / "plain", src, {})
    assert Tokenizer.from_file(str(plain / "tokenizer" / "tokenizer.json")).token_to_id("<|good|>") is None
    cfg = TokenizeConfig(tokenizer_path=str(plain / "tokenizer"), val_fraction=0.0)
    out = tmp_path / "reused"
    cond = ConditionConfig.model_validate({"control": {"enabled": True}})
    tokenize_corpus(cfg, src, out / "tokens", out / "tokenizer", out / "heldout", LocalExecutor(1), condition=cond)
    runs, tok = doc_runs(out)
    good, bad = tok.token_to_id("<|good|>"), tok.token_to_id("<|bad|>")
    # P75 of 0..7 = 5.25: docs 0..5 good, 6..7 bad
    assert good is not None and bad is not None and [r[0] for r in runs] == [good] * 6 + [bad] * 2
    assert tok.encode("<|good|>").ids == [good]


def test_higher_is_better_three_levels_and_missing_scores(tmp_path: Path) -> None:
    # 10 docs with quality q = i (higher better) and one without: best 30% -> L0, next 40% -> L1, rest L2.
    # oriented = -q over the 10 scored docs; P30 = -6.3, P70 = -2.7: q >= 7 -> L0, 3..6 -> L1, 0..2 -> L2
    docs = [Document(f"d{i:02d}", f"{WORDS[i]} {WORDS[i + 1]}", "prose", "t", {"edu": i}) for i in range(10)]
    docs.append(Document("zz", "heath inlet", "prose", "t", {}))
    cond = {
        "control": {
            "enabled": True,
            "score": "edu",
            "better": "higher",
            "tokens": ["<|q0|>", "<|q1|>", "<|q2|>"],
            "percentiles": [30, 70],
            "missing": "worst",
        }
    }
    _, out = pack(tmp_path, write_docs(tmp_path / "docs", docs), cond)
    runs, tok = doc_runs(out)
    ids = [tok.token_to_id(t) for t in ("<|q0|>", "<|q1|>", "<|q2|>")]
    assert [r[0] for r in runs] == [ids[2]] * 3 + [ids[1]] * 4 + [ids[0]] * 3 + [ids[2]]
    cond["control"]["missing"] = "error"
    with pytest.raises(ValueError, match="'zz' has no score 'edu'"):
        pack(tmp_path / "again", tmp_path / "docs", cond)


def test_segment_granularity_tags_each_paragraph_by_its_own_score(tmp_path: Path) -> None:
    paras = ["amber birch cedar\n\n", f"delta {BAD} ember\n\n", "fjord grove heath"]
    assert segments("".join(paras)) == paras
    docs = [
        Document("a", "".join(paras), "prose", "t", {}),
        Document("b", "inlet juniper kestrel\n\nlinden meadow amber", "prose", "t", {}),
    ]
    # word-list fraction per paragraph: only paragraph 2 of doc a is > 0; P75 of the 5 values is 0 -> bad iff > 0
    cond = {"control": {"enabled": True, "score": "tox_word_frac", "granularity": "segment"}}
    _, out = pack(tmp_path, write_docs(tmp_path / "docs", docs), cond)
    runs, tok = doc_runs(out)
    good, bad = tok.token_to_id("<|good|>"), tok.token_to_id("<|bad|>")
    assert [i for i in runs[0] if i in (good, bad)] == [good, bad, good]
    assert [i for i in runs[1] if i in (good, bad)] == [good, good]
    assert runs[0][0] == good
    text = tok.decode(runs[0], skip_special_tokens=False)
    assert text == "<|good|>" + paras[0] + "<|bad|>" + paras[1] + "<|good|>" + paras[2]
    with pytest.raises(ValueError, match="per-text scorer for 'tox_classifier'"):  # a stored-only score
        pack(tmp_path / "x", tmp_path / "docs", {"control": {"enabled": True, "granularity": "segment"}})


# ------------------------------------------------------------------------------------------------ MeCo
MARK = set("URL:.")  # characters only the prefix "URL: exampleN.org\n\n" has: the docs are lowercase words


def meco_corpus(tmp: Path) -> tuple[list[Document], Path]:
    docs = [
        Document(
            f"d{i:03d}",
            " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(3)),
            "prose",
            "t",
            {"url": f"https://www.example{i % 3}.org/page/{i}"},
        )
        for i in range(60)
    ]
    return docs, write_docs(tmp / "docs", docs)


def test_meco_streams_hold_the_same_documents_with_and_without_the_prefix(tmp_path: Path) -> None:
    docs, d = meco_corpus(tmp_path)
    _, out = pack(tmp_path, d, {"meco": {"enabled": True}})
    plain, tok = doc_runs(out, "train")
    meco, _ = doc_runs(out, "train_meco")
    dec = [tok.decode(r, skip_special_tokens=False) for r in meco]
    assert dec == [f"URL: example{i % 3}.org\n\n{doc.text}" for i, doc in enumerate(docs)]
    for p, m in zip(plain, meco, strict=True):  # the document's own tokens are untouched by the prefix
        assert m[len(m) - len(p) :] == p
    assert [tok.decode(r) for r in plain] == [doc.text for doc in docs]


def test_meco_prefix_disappears_exactly_at_the_cooldown_boundary_and_resumes_exactly(tmp_path: Path) -> None:
    _, d = meco_corpus(tmp_path)
    _, out = pack(tmp_path, d, {"meco": {"enabled": True}})
    tok = Tokenizer.from_file(str(out / "tokenizer" / "tokenizer.json"))
    marked = {i for i in range(tok.get_vocab_size()) if MARK & set(tok.decode([i]))}
    seq_len, boundary = 16, 11
    make = mixture_samplers(
        out / "tokens", MixtureConfig(weights={"prose": 1.0}), seq_len, 5, meco_windows=boundary
    )
    sampler = make("train")
    windows = [next(sampler) for _ in range(30)]
    # every window before the boundary holds (part of) a prefix, none after: targets w[1:] at training-token
    # positions >= boundary * seq_len never see a prefix token
    assert [bool(marked & set(w.tolist())) for w in windows] == [True] * boundary + [False] * (30 - boundary)
    targets = np.concatenate([w[1:] for w in windows])
    first_free = max(i for i, t in enumerate(targets.tolist()) if t in marked) + 1
    assert first_free <= boundary * seq_len and all(
        t not in marked for t in targets[boundary * seq_len :].tolist()
    )
    for k in (4, boundary, 20):  # resume before, at and after the boundary
        s = make("train")
        for _ in range(k):
            next(s)
        state = json.loads(json.dumps(s.state_dict()))
        fresh = make("train")
        fresh.load_state_dict(state)
        assert all(np.array_equal(next(fresh), w) for w in windows[k:])
    other = mixture_samplers(
        out / "tokens", MixtureConfig(weights={"prose": 1.0}), seq_len, 5, meco_windows=12
    )
    with pytest.raises(ValueError, match="boundary changed"):
        other("train").load_state_dict(state)


def test_boundary_is_a_whole_number_of_optimizer_steps() -> None:
    # 0.9 x 16 steps = 14.4 -> 14 steps; x 4 windows x 2 micro-batches x 2 devices
    assert boundary_windows(0.9, 16, 4, 2, 2) == 14 * 16
    assert boundary_windows(1.0, 10, 8, 1, 1) == 80
