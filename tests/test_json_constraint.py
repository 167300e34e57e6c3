"""The JSON prefix automaton behind ``response_format={"type": "json_object"}``, checked against Python's own
``json`` module: every prefix of real JSON is accepted, hand-picked invalid texts are refused where they
break, and random walks over a toy vocabulary's masks always end in text that ``json.loads`` parses."""

from __future__ import annotations

import json
import random

import pytest

from lmpipe.llm import json_constraint as jc

DOCS = [
    {},
    {"a": []},
    {"entities": ["Baenrein Observatory", "1851", "guild of clockmakers"], "summary": "One sentence."},
    {"n": -0.5e10, "z": 0, "f": 12.25, "e": 1e-7, "t": True, "f2": False, "nil": None},
    {"nested": {"deep": [[1, 2], {"x": [True, None, "s"]}], "empty": {}}},
    {"esc": 'quote " back \\ slash / tab \t newline \n', "uni": "café ☃ \u0001", "emoji": "🙂"},
]


def _accepts_every_prefix(text: str) -> jc.State:
    s = jc.START
    for i, b in enumerate(text.encode()):
        nxt = jc.step(s, b)
        assert nxt is not None, f"refused valid prefix {text[: i + 1]!r}"
        s = nxt
    return s


@pytest.mark.parametrize("doc", DOCS)
@pytest.mark.parametrize("style", ["compact", "spaced", "indented", "indent4", "ascii"])
def test_every_prefix_of_real_json_is_accepted_and_the_whole_completes(doc: dict, style: str) -> None:
    text = {
        "compact": json.dumps(doc, separators=(",", ":"), ensure_ascii=False),
        "spaced": json.dumps(doc, ensure_ascii=False),
        "indented": json.dumps(doc, indent=2, ensure_ascii=False),
        "indent4": json.dumps(doc, indent="\t", ensure_ascii=False),
        "ascii": json.dumps(doc),  # \uXXXX escapes
    }[style]
    assert jc.is_complete(_accepts_every_prefix(text))
    assert not jc.is_complete(_accepts_every_prefix(text[:-1]))


@pytest.mark.parametrize(
    ("text", "valid_prefix"),
    [
        ("[1, 2]", ""),  # json_object: the top level is an object
        ('{"a" 1}', '{"a" '),
        ("{,}", "{"),
        ('{"a": 01}', '{"a": 0'),
        ('{"a": 1,}', '{"a": 1,'),
        ('{"a": 1.}', '{"a": 1.'),
        ('{"a": -}', '{"a": -'),
        ('{"a": 1e}', '{"a": 1e'),
        ('{"a": tru}', '{"a": tru'),
        ('{"a": "x\ty"}', '{"a": "x'),  # raw control characters are not allowed in strings
        ('{"a": "\\q"}', '{"a": "\\'),
        ('{"a": "\\u12G4"}', '{"a": "\\u12'),
        ('{"a": [1}', '{"a": [1'),
        ('{"a": 1]', '{"a": 1'),
        ('{"a": 1}{', '{"a": 1}'),
        ("{'a': 1}", "{"),
    ],
)
def test_invalid_json_is_refused_exactly_where_it_breaks(text: str, valid_prefix: str) -> None:
    for k in range(1, len(text) + 1):  # the first k bytes are accepted iff they are within the valid prefix
        accepted = jc.feed(jc.START, text[:k].encode()) is not None
        assert accepted == (k <= len(valid_prefix)), (text, text[:k])
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    assert not isinstance(parsed, dict)  # Python's parser agrees it is no JSON object


def test_limits_on_whitespace_runs_digits_and_depth() -> None:
    # valid JSON that is still refused on purpose: the reply starts at the object and stops right after it
    assert jc.feed(jc.START, b' {"a": 1}') is None
    assert jc.feed(jc.START, b'{"a": 1} ') is None
    assert jc.feed(jc.START, b"{" + b"\n" * jc.MAX_NEWLINES + b" " * (jc.INDENT + 1)) is not None
    assert jc.feed(jc.START, b"{" + b"\n" * (jc.MAX_NEWLINES + 1)) is None
    assert jc.feed(jc.START, b"{" + b" " * (jc.INDENT + 2)) is None
    assert jc.feed(jc.START, b'{"a": [[\n' + b" " * (3 * jc.INDENT + 1)) is not None  # deeper: more indent
    assert jc.feed(jc.START, b'{"a":' + b"7" * jc.MAX_DIGITS) is not None
    assert jc.feed(jc.START, b'{"a":' + b"7" * (jc.MAX_DIGITS + 1)) is None
    assert jc.feed(jc.START, b'{"a": 1.' + b"5" * jc.MAX_DIGITS + b"e" + b"1" * 3 + b"}") is not None
    deep = b'{"a":' + b"[" * (jc.MAX_DEPTH - 1)
    assert jc.feed(jc.START, deep) is not None and jc.feed(jc.START, deep + b"[") is None
    assert jc.feed(jc.START, b'{"a": "' + b" " * 50 + b'"}') is not None  # spaces inside strings are text


def _toy_vocab(seed: int) -> list[bytes | None]:
    rng = random.Random(seed)
    pieces = [c.encode() for c in '{}[]:,"\\ \n0123456789-+.eEtrufalsn'] + [
        "é".encode()[:1],
        "é".encode()[1:],
    ]
    pieces += [b'{"', b'":', b'", "', b'"}', b"true", b"null", b"12", b"\\u00e9", b"abc", b" de", b"\x01"]
    words = [bytes(rng.choice(b'ab "{}[]:,0123') for _ in range(rng.randint(1, 4))) for _ in range(60)]
    return [None, *pieces, *words, b""]  # id 0: end-of-sequence (a special token)


@pytest.mark.parametrize("seed", range(4))
def test_random_walks_over_masks_end_in_parseable_objects(seed: int) -> None:
    vocab = _toy_vocab(seed)
    v = jc.JSONVocabulary(vocab, {0}, len(vocab) + 3)  # ids past the tokenizer never appear
    rng = random.Random(seed)
    finished = 0
    for _ in range(150):
        s, out = v.start(), b""
        for _ in range(80):
            allowed = v.mask(s).nonzero().flatten().tolist()
            assert allowed and all(t < len(vocab) for t in allowed)
            if jc.is_complete(s):
                assert allowed == [0]  # once the object is closed, only end-of-sequence
                break
            assert 0 not in allowed  # ... and never before
            # prefer closing tokens so that walks finish
            closing = [t for t in allowed if vocab[t] and vocab[t][-1:] in (b"}", b"]", b'"')]
            tid = rng.choice(closing if closing and rng.random() < 0.5 else allowed)
            out += vocab[tid]
            s = v.advance(s, tid)
        if jc.is_complete(s):
            finished += 1
            assert isinstance(json.loads(out.decode("utf-8", errors="replace")), dict), out
    assert finished > 20


def test_mask_equals_token_by_token_check() -> None:
    """The trie walk finds exactly the tokens that feeding their bytes one by one accepts."""
    vocab = _toy_vocab(7)
    v = jc.JSONVocabulary(vocab, {0}, len(vocab))
    for prefix in (b"", b"{", b'{"k', b'{"k":', b'{"k": 1', b'{"k": [tr', b'{"k": "\\', b'{"k": {"a": 1.5e'):
        s = jc.feed(jc.START, prefix)
        assert s is not None
        expected = {i for i, b in enumerate(vocab) if b and jc.feed(s, b) is not None}
        assert set(v.mask(s).nonzero().flatten().tolist()) == expected, prefix


def test_byte_level_vocabulary_bytes_roundtrip() -> None:
    """Token bytes of a byte-level BPE tokenizer concatenate to the UTF-8 of what it decodes to."""
    from lmpipe.tiny import train_tokenizer

    tok = train_tokenizer(["Café clocks ☃ tick", "the guild's clockmakers"] * 20, vocab_size=300, chat=True)
    table = jc.vocabulary_bytes(tok, len(tok) + 2)
    assert table[-2:] == [None, None]
    text = "Café guild ☃ clockmakers tick"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert b"".join(table[i] for i in ids).decode() == text
    assert all(table[i] is None for i in tok.all_special_ids)
