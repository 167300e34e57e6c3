"""The OpenAI-compatible HTTP client against a real fault-injecting server on 127.0.0.1."""

from __future__ import annotations

import email.utils
import logging
import time

import pytest

from lmpipe.llm.http import HTTPBackend, retry_after_seconds
from lmpipe.llm.testing import FaultServer, default_reply
from lmpipe.llm.types import GenFailure, GenRequest, GenResult, json_format


def _client(url: str, **kw: object) -> HTTPBackend:
    opts: dict = {
        "max_retries": 3,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "timeout_s": 0.5,
        "concurrency": 8,
    }
    opts.update(kw)
    return HTTPBackend(url, "test-model", **opts)


def _case(req: dict) -> str:
    return (req.get("messages") or [{"content": req.get("prompt", "")}])[-1]["content"].split(":")[0]


def test_transient_faults_are_retried_until_success() -> None:
    # each case fails for the listed attempts, then answers normally
    plans = {
        "429": ["429"],
        "500x2": ["500", "500"],
        "503": ["503"],
        "timeout": ["timeout"],
        "reset": ["reset"],
        "garbage": ["garbage"],
        "truncated": ["truncated"],
        "nochoices": ["empty_choices"],
        "ok": [],
    }

    def script(req: dict, attempt: int) -> str:
        plan = plans[_case(req)]
        return plan[attempt] if attempt < len(plan) else "ok"

    with FaultServer(script, retry_after="0", hang_s=1.5) as srv:
        client = _client(srv.url)
        reqs = [GenRequest.chat([{"role": "user", "content": f"{c}: hello"}], max_tokens=16) for c in plans]
        reqs.append(GenRequest(prompt="ok: a completion", max_tokens=16))
        outs = client.generate(reqs)
    for req, out in zip(reqs, outs, strict=True):
        assert isinstance(out, GenResult), (req, out)
        body = {"messages": req.message_dicts()} if req.kind == "chat" else {"prompt": req.prompt}
        assert out.text == default_reply(body)
    # one attempt per planned fault plus the success, never more
    assert sorted(srv.attempts.values()) == sorted([len(p) + 1 for p in plans.values()] + [1])
    assert client.usage.attempts >= srv.requests  # a stale pooled connection can fail before reaching it


def test_permanent_faults_are_quarantined_with_raw_payload_and_bounded_retries() -> None:
    always = {
        "p500": "500",
        "pgarbage": "garbage",
        "ptruncated": "truncated",
        "ptimeout": "timeout",
        "p400": "400",
    }
    with FaultServer(lambda req, attempt: always[_case(req)], hang_s=1.0) as srv:
        client = _client(srv.url, max_retries=2)
        reqs = [GenRequest.chat([{"role": "user", "content": f"{c}: x"}]) for c in always]
        t0 = time.monotonic()
        outs = dict(zip(always, client.generate(reqs), strict=True))
        elapsed = time.monotonic() - t0
    assert all(isinstance(o, GenFailure) for o in outs.values())
    assert outs["p500"].reason == "http_500" and outs["p500"].attempts == 3
    assert outs["pgarbage"].reason == "malformed_response"
    assert outs["pgarbage"].raw == b"<html><body>502 upstream hiccup</body></html>"
    assert outs["ptruncated"].reason == "malformed_response"
    assert outs["ptruncated"].raw.startswith(b'{"object": "chat.completion"') and not outs[
        "ptruncated"
    ].raw.endswith(b"}")
    assert outs["ptimeout"].reason == "timeout"
    assert outs["p400"].reason == "http_400" and outs["p400"].attempts == 1  # a client error is not retried
    assert max(srv.attempts.values()) == 3  # 1 + max_retries
    assert srv.requests == 4 * 3 + 1
    assert elapsed < 10


def test_retry_after_is_honoured() -> None:
    with FaultServer(lambda req, attempt: "429" if attempt == 0 else "ok", retry_after="1") as srv:
        client = _client(srv.url, backoff_base_s=0.01)
        t0 = time.monotonic()
        out = client.generate([GenRequest(prompt="hi", max_tokens=4)])[0]
        gap = srv.arrivals[1] - srv.arrivals[0]
    assert isinstance(out, GenResult)
    assert gap >= 0.95, gap  # waited for Retry-After: 1, not the 10 ms backoff
    assert time.monotonic() - t0 < 5


def test_retry_after_http_date() -> None:
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert 1.5 <= retry_after_seconds(when) <= 3.5
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("soon") is None


def test_backoff_is_exponential_jittered_and_capped() -> None:
    c = HTTPBackend("http://127.0.0.1:9", "m", backoff_base_s=1.0, backoff_max_s=4.0)
    for attempt, cap in ((1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)):
        delays = [c.backoff(attempt, None) for _ in range(50)]
        assert all(cap / 2 <= d <= cap for d in delays)
        assert len(set(delays)) > 1  # jittered
    assert c.backoff(1, retry_after=3.0) == 3.0


def test_concurrency_limit() -> None:
    with FaultServer(lambda req, attempt: "slow", hang_s=0.2) as srv:
        outs = _client(srv.url, concurrency=3).generate([GenRequest(prompt=f"p{i}") for i in range(12)])
    assert all(isinstance(o, GenResult) for o in outs)
    assert srv.max_in_flight == 3


def test_token_bucket_rate_limit() -> None:
    with FaultServer(lambda req, attempt: "ok") as srv:
        _client(srv.url, requests_per_second=20, burst=2).generate(
            [GenRequest(prompt=f"p{i}") for i in range(12)]
        )
        span = srv.arrivals[-1] - srv.arrivals[0]
    assert span >= (12 - 2) / 20 * 0.9, span  # after the burst, 20 per second


def test_connection_refused_is_a_failure_not_a_crash() -> None:
    out = _client("http://127.0.0.1:9/v1", max_retries=1).generate([GenRequest(prompt="x")])[0]
    assert isinstance(out, GenFailure) and out.reason == "connection_error" and out.attempts == 2


def test_api_key_from_env_sent_but_never_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LMPIPE_TEST_KEY", "sk-very-secret")
    caplog.set_level(logging.DEBUG)
    with FaultServer(lambda req, attempt: "500" if attempt == 0 else "ok", retry_after="0") as srv:
        client = _client(srv.url, api_key_env="LMPIPE_TEST_KEY")
        client.generate([GenRequest(prompt="x")])
    assert srv.headers_seen[0].get("Authorization") == "Bearer sk-very-secret"
    assert "sk-very-secret" not in repr(client) + caplog.text
    assert "retry 1/3" in caplog.text


def test_response_format_and_logprobs_are_sent_and_missing_logprobs_are_malformed() -> None:
    bodies: list[dict] = []

    def script(req: dict, attempt: int) -> str:
        bodies.append(req)
        return "ok"

    with FaultServer(script) as srv:
        client = _client(srv.url, max_retries=1)
        schema = {"type": "object", "properties": {"a": {"type": "string"}}}
        outs = client.generate(
            [
                GenRequest.chat([{"role": "user", "content": "j"}], response_format=json_format()),
                GenRequest(prompt="s", response_format=json_format(schema, "thing")),
                GenRequest.chat([{"role": "user", "content": "lp"}], logprobs=True, top_logprobs=2),
            ]
        )
    by = {(b.get("messages") or [{"content": b.get("prompt")}])[-1]["content"]: b for b in bodies}
    assert by["j"]["response_format"] == {"type": "json_object"}
    assert by["s"]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema, "strict": True},
    }
    assert by["lp"]["logprobs"] is True and by["lp"]["top_logprobs"] == 2
    assert "logprobs" not in by["j"] and "response_format" not in by["lp"]
    assert isinstance(outs[0], GenResult) and isinstance(outs[1], GenResult)
    # the fault server's replies carry no logprobs: asked for and missing is a malformed reply
    assert isinstance(outs[2], GenFailure) and outs[2].reason == "malformed_response"
