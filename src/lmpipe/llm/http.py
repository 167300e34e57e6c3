"""OpenAI-compatible HTTP backend (vLLM, llama.cpp server, TGI, OpenAI, ``lmpipe serve-llm``).

Async with ``httpx``: at most ``concurrency`` requests in flight, a token bucket for requests per second,
and bounded retries with jittered exponential backoff on 429, 5xx, timeouts and dropped connections,
waiting at least the server's ``Retry-After``. A 200 whose body is not a well-formed completion (garbage,
truncated JSON, no choices) is retried too, then returned as a ``GenFailure`` carrying the raw payload so
the caller can quarantine it. The API key comes from an environment variable named in the config; it is
sent as a header and never logged or shown in ``repr``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from typing import Any

import httpx

from lmpipe.llm.types import GenFailure, GenRequest, GenResult, Outcome, TokenLogprob, Usage

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
RAW_LIMIT = 64 << 10  # keep at most this much of a bad payload for quarantine


class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``; ``rate <= 0`` means unlimited."""

    def __init__(self, rate: float, burst: int = 1) -> None:
        self.rate, self.burst = rate, max(1, burst)
        self._tokens = float(self.burst)
        self._last = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self._lock:  # FIFO: waiters are served in arrival order
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self.rate)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Malformed(Exception):
    pass


def parse_completion(body: bytes, kind: str, want_logprobs: bool = False) -> GenResult:
    """An OpenAI chat/completions response body → ``GenResult``; raises ``_Malformed`` when it is not one."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        text = choice["message"]["content"] if kind == "chat" else choice["text"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise _Malformed(f"{type(exc).__name__}: {exc}") from None
    if not isinstance(text, str):
        raise _Malformed(f"content is {type(text).__name__}, not a string")
    usage = data.get("usage") or {}
    return GenResult(
        text=text,
        finish_reason=str(choice.get("finish_reason") or "stop"),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        logprobs=_logprobs(choice.get("logprobs"), kind) if want_logprobs else None,
    )


def _logprobs(lp: Any, kind: str) -> list[TokenLogprob]:
    """Either OpenAI logprobs shape → chat-shaped entries; raises ``_Malformed`` when missing."""
    try:
        if kind == "chat":
            return [
                {"token": e["token"], "logprob": float(e["logprob"]), "bytes": list(e.get("bytes") or []),
                 "top_logprobs": list(e.get("top_logprobs") or [])}
                for e in lp["content"]
            ]  # fmt: skip
        return [
            {"token": t, "logprob": float(v), "bytes": list(t.encode()),
             "top_logprobs": [{"token": k, "logprob": x, "bytes": list(k.encode())}
                              for k, x in sorted(top.items(), key=lambda kv: -kv[1])]}
            for t, v, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True)
        ]  # fmt: skip
    except (KeyError, TypeError, ValueError) as exc:
        raise _Malformed(f"logprobs asked for but not returned: {type(exc).__name__}: {exc}") from None


class HTTPBackend:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        concurrency: int = 8,
        requests_per_second: float = 0.0,
        burst: int = 1,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 120.0,
        timeout_s: float = 120.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_id = f"openai:{model}"
        self._api_key_env = api_key_env
        self.concurrency, self.rps, self.burst = concurrency, requests_per_second, burst
        self.max_retries = max_retries
        self.backoff_base_s, self.backoff_max_s, self.retry_after_max_s = (
            backoff_base_s,
            backoff_max_s,
            retry_after_max_s,
        )
        self.timeout_s = timeout_s
        self.usage = Usage()
        self._jitter = random.Random()  # jitter only spreads retries in time; it never affects outputs

    def __repr__(self) -> str:  # never shows the key, only where it would come from
        return f"HTTPBackend({self.base_url!r}, model={self.model!r}, api_key_env={self._api_key_env!r})"

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self._api_key_env) if self._api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _body(self, req: GenRequest) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
        }
        if req.stop:
            body["stop"] = list(req.stop)
        if req.repetition_penalty != 1.0:  # a vLLM / llama.cpp / lmpipe extension; omitted when neutral
            body["repetition_penalty"] = req.repetition_penalty
        if req.response_format:  # JSON mode / structured outputs (OpenAI, vLLM, llama.cpp, serve-llm)
            body["response_format"] = json.loads(req.response_format)
        if req.logprobs:
            if req.kind == "chat":
                body["logprobs"], body["top_logprobs"] = True, req.top_logprobs
            else:
                body["logprobs"] = req.top_logprobs
        if req.kind == "chat":
            body["messages"] = req.message_dicts()
            return "/chat/completions", body
        body["prompt"] = req.prompt
        return "/completions", body

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry ``attempt`` (1-based): jittered exponential, at least Retry-After."""
        cap = min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1))
        delay = cap * (0.5 + 0.5 * self._jitter.random())
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_max_s))
        return delay

    async def _one(
        self, client: httpx.AsyncClient, sem: asyncio.Semaphore, bucket: TokenBucket, req: GenRequest
    ) -> Outcome:
        path, body = self._body(req)
        last: GenFailure = GenFailure("no_attempt")
        for attempt in range(self.max_retries + 1):
            retry_after = None
            async with sem:
                await bucket.acquire()
                self.usage.attempts += 1
                try:
                    resp = await client.post(self.base_url + path, json=body)
                    raw = resp.content
                except httpx.TimeoutException as exc:
                    last = GenFailure("timeout", f"{type(exc).__name__} after {self.timeout_s}s")
                except httpx.TransportError as exc:  # refused, reset, closed mid-response
                    last = GenFailure("connection_error", f"{type(exc).__name__}: {exc}")
                else:
                    if resp.status_code == 200:
                        try:
                            return parse_completion(raw, req.kind, req.logprobs)
                        except _Malformed as exc:
                            last = GenFailure("malformed_response", str(exc), raw[:RAW_LIMIT])
                    elif resp.status_code in RETRY_STATUS:
                        retry_after = retry_after_seconds(resp.headers.get("retry-after"))
                        last = GenFailure(f"http_{resp.status_code}", resp.reason_phrase, raw[:RAW_LIMIT])
                    else:  # 400/401/404/422...: asking again will not help
                        last = GenFailure(f"http_{resp.status_code}", resp.reason_phrase, raw[:RAW_LIMIT])
                        last.attempts = attempt + 1
                        return last
            if attempt < self.max_retries:
                delay = self.backoff(attempt + 1, retry_after)
                log.info(
                    "retry %d/%d in %.2fs after %s (%s)",
                    attempt + 1,
                    self.max_retries,
                    delay,
                    last.reason,
                    path,
                )
                await asyncio.sleep(delay)
        last.attempts = self.max_retries + 1
        last.detail = f"gave up after {last.attempts} attempts: {last.detail}"
        return last

    async def agenerate(self, requests: list[GenRequest]) -> list[Outcome]:
        sem = asyncio.Semaphore(self.concurrency)
        bucket = TokenBucket(self.rps, self.burst)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
        async with httpx.AsyncClient(headers=self._headers(), timeout=timeout, limits=limits) as client:
            return list(await asyncio.gather(*(self._one(client, sem, bucket, r) for r in requests)))

    def generate(self, requests: list[GenRequest]) -> list[Outcome]:
        if not requests:
            return []
        return asyncio.run(self.agenerate(requests))

    def close(self) -> None:
        pass
