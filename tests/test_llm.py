"""Embedded backend (tiny random HF model), response cache, request keys. The real SmolLM2 following an instruction
is tests/test_llm_openai.py: that module loads it once and serves it through this same backend."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import pytest
import torch

from lmpipe.llm.cache import CachedBackend, ResponseCache
from lmpipe.llm.embedded import EmbeddedBackend, resolve_model
from lmpipe.llm.testing import build_tiny_model
from lmpipe.llm.types import GenFailure, GenRequest, GenResult, json_format


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> EmbeddedBackend:
    torch.set_num_threads(1)
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"))
    return EmbeddedBackend(str(path), threads=1, batch_size=4)


def _chat(text: str, **kw: object) -> GenRequest:
    return GenRequest.chat([{"role": "user", "content": text}], **kw)


def test_greedy_matches_transformers_generate(tiny: EmbeddedBackend) -> None:
    for prompt in ("The observatory was founded", "Entities and relations"):
        req = _chat(prompt, max_tokens=12)
        ours = tiny.generate([req])[0]
        ids = torch.tensor([tiny.render(req)])
        ref = tiny.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=False,
            pad_token_id=tiny.pad_id,
        )
        expected = tiny.tok.decode(ref[0, ids.shape[1] :], skip_special_tokens=True)
        assert isinstance(ours, GenResult) and ours.text == expected
        assert ours.prompt_tokens == ids.shape[1]


def test_output_does_not_depend_on_batch_mates(tiny: EmbeddedBackend) -> None:
    reqs = [
        _chat("a short one", max_tokens=10, seed=1),
        _chat(
            "a much longer prompt about clockmakers, harbours and guilds of the old town",
            max_tokens=14,
            temperature=0.9,
            top_p=0.8,
            seed=2,
        ),
        GenRequest(prompt="1851", max_tokens=6, temperature=1.2, repetition_penalty=1.3, seed=3),
        _chat("another", max_tokens=9, repetition_penalty=1.2, seed=4),
        _chat("fifth, in a second micro-batch", max_tokens=5, temperature=0.7, seed=5),
        _chat("json", max_tokens=12, temperature=0.9, seed=6, response_format=json_format()),
        GenRequest(prompt="logprobs", max_tokens=6, logprobs=True, top_logprobs=2),
    ]
    together = tiny.generate(reqs)
    alone = [tiny.generate([r])[0] for r in reqs]
    assert [o.text for o in together] == [o.text for o in alone]
    assert [o.completion_tokens for o in together] == [o.completion_tokens for o in alone]
    a, b = together[-1].logprobs, alone[-1].logprobs  # equal up to float noise from padded batching
    assert [e["token"] for e in a] == [e["token"] for e in b]
    assert [e["logprob"] for e in a] == pytest.approx([e["logprob"] for e in b], abs=1e-4)


def test_streamed_deltas_add_up_to_the_text_and_never_show_a_stop_string(tiny: EmbeddedBackend) -> None:
    full = tiny.generate([_chat("stream test", max_tokens=24)])[0]
    stop = full.text[10:14]
    reqs = [_chat("stream test", max_tokens=24), _chat("stream test", max_tokens=24, stop=(stop,))]
    deltas: dict[int, list[str]] = {0: [], 1: []}
    outs = tiny.generate(reqs, on_token=lambda i, d, lp: deltas[i].append(d))
    # one call per token; the pieces add up to the text, bar a trailing partial character held back
    assert outs[0].text == full.text and len(deltas[0]) == full.completion_tokens
    assert outs[0].text.startswith("".join(deltas[0])) and len(outs[0].text) - len("".join(deltas[0])) <= 1
    streamed = "".join(deltas[1])
    assert stop not in streamed and outs[1].text.startswith(streamed)
    assert outs[1].text == full.text[: full.text.index(stop)]


def test_logprobs_are_the_models_own_log_softmax(tiny: EmbeddedBackend) -> None:
    req = GenRequest(prompt="The guild", max_tokens=4, logprobs=True, top_logprobs=3)
    out = tiny.generate([req])[0]
    ids = tiny.tok(req.prompt)["input_ids"]
    assert out.logprobs is not None and len(out.logprobs) == out.completion_tokens
    with torch.inference_mode():
        for entry in out.logprobs:
            logp = torch.log_softmax(tiny.model(torch.tensor([ids])).logits[0, -1].double(), -1)
            top = torch.topk(logp, 3)
            assert [a["logprob"] for a in entry["top_logprobs"]] == pytest.approx(
                top.values.tolist(), abs=1e-5
            )
            best = int(top.indices[0])
            assert entry["logprob"] == pytest.approx(float(logp[best]), abs=1e-5)
            assert bytes(entry["bytes"]).decode(errors="replace") == tiny.tok.decode([best])
            ids.append(best)


def test_json_object_and_schema_requests(tiny: EmbeddedBackend) -> None:
    """The tiny model is random, so what it writes is noise: but noise inside the JSON grammar."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}  # fmt: skip
    reqs = [
        _chat(f"j{i}", max_tokens=40, temperature=1.0, seed=i, response_format=json_format())
        for i in range(6)
    ]
    reqs.append(_chat("s", max_tokens=40, temperature=1.0, response_format=json_format(schema)))
    outs = tiny.generate(reqs)
    assert all(isinstance(o, GenResult) and o.text.startswith("{") for o in outs)
    assert all(isinstance(json.loads(o.text), dict) for o in outs if o.finish_reason == "stop")
    assert outs[-1].finish_reason == "stop" and isinstance(json.loads(outs[-1].text)["n"], int)
    # a schema's property order is the order of generation (as with OpenAI structured outputs)
    ordered = {"type": "object", "properties": {"z": {"type": "integer"}, "a": {"type": "integer"}},
               "required": ["z", "a"], "additionalProperties": False}  # fmt: skip
    out = tiny.generate([_chat("o", max_tokens=60, response_format=json_format(ordered))])[0]
    assert list(json.loads(out.text)) == ["z", "a"]
    bad = tiny.generate([_chat("x", response_format='{"type": "xml"}')])[0]
    assert isinstance(bad, GenFailure) and "xml" in bad.detail


def test_seeded_sampling_is_reproducible_and_seed_sensitive(tiny: EmbeddedBackend) -> None:
    texts = {
        s: tiny.generate([_chat("tell a story", max_tokens=16, temperature=1.0, seed=s)])[0].text
        for s in range(4)
    }
    again = tiny.generate([_chat("tell a story", max_tokens=16, temperature=1.0, seed=2)])[0].text
    assert again == texts[2]
    assert len(set(texts.values())) == 4


def test_max_tokens_and_stop_strings(tiny: EmbeddedBackend) -> None:
    full = tiny.generate([_chat("stop test", max_tokens=20)])[0]
    assert full.finish_reason == "length" and full.completion_tokens == 20
    stop = full.text[6:9]
    cut = tiny.generate([_chat("stop test", max_tokens=20, stop=(stop,))])[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]


def _other(value: Any, hint: Any) -> Any:
    """A value of type ``hint`` different from ``value``."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is bool:
        return not value
    if hint in (int, float):
        return value + 1
    if hint is str:
        return value + "~"
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: one more element
        return (*value, _sample(args[0]))
    if origin is tuple:  # fixed-size tuple: change its first element
        return (_other(value[0], args[0]), *value[1:])
    raise AssertionError(f"no rule to vary a {hint!r}: extend _other so the new request field is covered")


def _sample(hint: Any) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return tuple(_sample(a) for a in args)
    return _other(hint(), hint) if hint in (bool, int, float, str) else _other((), hint)


def test_request_key_covers_every_field() -> None:
    """Every field of GenRequest, found by introspection (a new field is covered without editing this test),
    changes the cache key alone; so does the model; equal requests share it."""
    base = GenRequest(
        messages=(("user", "x"),),
        prompt="p",
        max_tokens=8,
        temperature=0.5,
        top_p=0.9,
        repetition_penalty=1.1,
        seed=1,
        stop=("\n",),
    )
    hints = get_type_hints(GenRequest)
    variants = {}
    for f in dataclasses.fields(GenRequest):
        v = dataclasses.replace(base, **{f.name: _other(getattr(base, f.name), hints[f.name])})
        assert [g.name for g in dataclasses.fields(v) if getattr(v, g.name) != getattr(base, g.name)] == [
            f.name
        ]
        variants[f.name] = v
    assert "repetition_penalty" in variants and len(variants) == len(dataclasses.fields(GenRequest))
    unchanged = [name for name, v in variants.items() if v.key("m") == base.key("m")]
    assert unchanged == [], f"the cache key ignores {unchanged}"
    assert len({v.key("m") for v in variants.values()}) == len(variants)
    assert base.key("m") != base.key("other-model")
    assert base.key("m") == dataclasses.replace(base).key("m")


class _Counting:
    """A backend that answers every request with its own text and counts what reaches it."""

    model_id = "counting"

    def __init__(self) -> None:
        self.seen: list[GenRequest] = []

    def generate(self, requests: list[GenRequest]) -> list[GenResult]:
        self.seen += requests
        return [GenResult(text=repr(r), finish_reason="stop") for r in requests]

    def close(self) -> None:
        pass


def test_cache_misses_when_any_request_field_differs(tmp_path: Path) -> None:
    base = GenRequest(prompt="p", max_tokens=8, temperature=0.5, seed=1)
    hints = get_type_hints(GenRequest)
    reqs = [base] + [
        dataclasses.replace(base, **{f.name: _other(getattr(base, f.name), hints[f.name])})
        for f in dataclasses.fields(GenRequest)
    ]
    inner = _Counting()
    cached = CachedBackend(inner, ResponseCache(tmp_path / "c.sqlite"))
    first = cached.generate(reqs)
    assert inner.seen == reqs  # each variant is a miss of its own, none served another's answer
    again = cached.generate(reqs)
    assert len(inner.seen) == len(reqs) and all(r.cached for r in again)
    assert [r.text for r in again] == [r.text for r in first] == [repr(r) for r in reqs]
    cached.close()


def test_cache_keys_of_older_requests_still_match() -> None:
    """Fields added later are left out of the key at their defaults: responses cached before them still hit."""
    base = _chat("x", max_tokens=8, temperature=0.5, seed=1)
    old_fields = {"messages": [["user", "x"]], "prompt": "", "max_tokens": 8, "temperature": 0.5, "top_p": 1.0,
                  "repetition_penalty": 1.0, "seed": 1, "stop": []}  # fmt: skip
    payload = json.dumps({"model": "m", **old_fields}, sort_keys=True, ensure_ascii=False)
    assert base.key("m") == hashlib.sha256(payload.encode()).hexdigest()


def test_cache_serves_repeats_without_calling_the_model(tiny: EmbeddedBackend, tmp_path: Path) -> None:
    db = tmp_path / "cache.sqlite"
    reqs = [_chat(f"prompt {i}", max_tokens=6, seed=i) for i in range(3)]
    cached = CachedBackend(tiny, ResponseCache(db))
    before = tiny.usage.requests
    first = cached.generate(reqs)
    assert tiny.usage.requests - before == 3
    second = cached.generate(reqs + [reqs[0]])
    assert tiny.usage.requests - before == 3  # nothing new reached the model
    assert [o.text for o in second] == [o.text for o in first] + [first[0].text]
    lp_req = _chat("prompt 0", max_tokens=3, logprobs=True, top_logprobs=1)
    assert lp_req.key("m") != reqs[0].key("m")
    fresh = cached.generate([lp_req])[0]
    hit = CachedBackend(tiny, ResponseCache(db)).generate([lp_req])[0]
    assert hit.cached and hit.logprobs == fresh.logprobs and len(hit.logprobs) == 3
    assert all(o.cached for o in second) and cached.usage.cache_hits == 4
    # a fresh process reading the same file: still hits (persistent, not in-memory)
    code = (
        "import sys; from lmpipe.llm.cache import ResponseCache; from lmpipe.llm.types import GenRequest as G;"
        f"c=ResponseCache({str(db)!r}); k=G.chat([{{'role':'user','content':'prompt 1'}}], max_tokens=6, seed=1)"
        f".key({tiny.model_id!r}); print(c.get_many([k])[k].text)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.rstrip("\n") == first[1].text


def test_resolve_model_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "m.gguf").write_bytes(b"x")
    assert resolve_model(str(tmp_path / "m.gguf")) == (tmp_path, "m.gguf")
    assert resolve_model(str(tmp_path)) == (tmp_path, "m.gguf")


def test_a_gguf_is_converted_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first load of a GGUF keeps its dequantised model as an HF directory; later loads (any process) read
    that copy and convert nothing; a different GGUF file (another fingerprint) gets its own copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmpipe.llm import embedded

    src = build_tiny_model(tmp_path / "tiny")  # stands in for what transformers dequantises from the GGUF
    ggufs = tmp_path / "ggufs"
    ggufs.mkdir()
    (ggufs / "m.gguf").write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setenv("LMPIPE_CACHE_DIR", str(tmp_path / "cache"))
    converted: list[str] = []

    def dequantise(directory: Path, name: str) -> tuple[Any, Any]:
        converted.append(name)
        return AutoTokenizer.from_pretrained(src), AutoModelForCausalLM.from_pretrained(src)

    monkeypatch.setattr(embedded, "load_gguf", dequantise)
    first = embedded.hf_copy(ggufs, "m.gguf")
    assert first.parent == tmp_path / "cache" / "gguf" and (first / "config.json").is_file()
    assert embedded.hf_copy(ggufs, "m.gguf") == first and converted == ["m.gguf"]
    assert not [p for p in first.parent.iterdir() if ".tmp-" in p.name]  # written aside, renamed
    backend = EmbeddedBackend(str(ggufs / "m.gguf"), threads=1)  # the backend loads the copy: no conversion
    assert converted == ["m.gguf"] and backend.model_id.startswith("embedded:m.gguf:")
    (ggufs / "m.gguf").write_bytes(b"GGUF" + bytes(61))  # another file: another copy
    assert embedded.hf_copy(ggufs, "m.gguf") != first and converted == ["m.gguf", "m.gguf"]
