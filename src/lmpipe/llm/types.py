"""The one protocol every LLM backend speaks: a batch of ``GenRequest`` in, one ``GenResult`` or
``GenFailure`` per request out, in order.

A request is fully described by its fields (messages or prompt, sampling params, seed), so its ``key``
under a model name identifies the response: the persistent cache and deterministic reruns build on that.
Failures are values, not exceptions, so one bad request never sinks a batch: callers quarantine them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol, TypedDict

Kind = Literal["chat", "completion"]


@dataclass(frozen=True, slots=True)
class GenRequest:
    """One generation. ``messages`` for chat ([{"role", "content"}...]), ``prompt`` for completions."""

    messages: tuple[tuple[str, str], ...] = ()
    prompt: str = ""
    max_tokens: int = 128
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    logprobs: bool = False  # return each generated token's log-probability
    top_logprobs: int = 0  # ... and this many most likely alternatives per position
    response_format: str = ""  # "" = free text, else compact JSON of an OpenAI response_format object

    @property
    def kind(self) -> Kind:
        return "chat" if self.messages else "completion"

    @classmethod
    def chat(cls, messages: list[dict[str, str]], **kw: object) -> GenRequest:
        return cls(messages=tuple((m["role"], m["content"]) for m in messages), **kw)  # type: ignore[arg-type]

    def message_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def key(self, model: str) -> str:
        """Stable identity of (model, input, sampling params, seed): the cache key. Fields added later are
        left out while at their default, so keys of responses already cached stay valid."""
        fields = {k: v for k, v in asdict(self).items() if k not in _LATER or v != _LATER[k]}
        payload = json.dumps({"model": model, **fields}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode()).hexdigest()


_LATER = {"logprobs": False, "top_logprobs": 0, "response_format": ""}


def json_format(schema: dict | None = None, name: str = "output") -> str:
    """``GenRequest.response_format`` asking for a JSON object, or for JSON that follows ``schema``."""
    fmt: dict = {"type": "json_object"}
    if schema is not None:
        fmt = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
    return json.dumps(fmt, separators=(",", ":"))  # unsorted: property order is generation order


class TokenLogprob(TypedDict):
    """One generated token, in the shape of OpenAI's chat ``logprobs.content`` items."""

    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[dict]  # [{"token", "logprob", "bytes"}], most likely first


# streaming hook: (request index, text delta, that token's logprob entry or None), called per token
OnToken = Callable[[int, str, "TokenLogprob | None"], None]


@dataclass(slots=True)
class GenResult:
    text: str
    finish_reason: str  # 'stop' (natural end or stop string) or 'length' (hit max_tokens)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    logprobs: list[TokenLogprob] | None = None  # set when the request asked for them


@dataclass(slots=True)
class GenFailure:
    """A request that could not be served: ``reason`` is machine-readable, ``raw`` the last payload seen."""

    reason: str  # e.g. 'http_500', 'timeout', 'malformed_response', 'http_400'
    detail: str = ""
    raw: bytes | None = None
    attempts: int = 0


Outcome = GenResult | GenFailure


USAGE_KEYS = ("requests", "attempts", "cache_hits", "failures", "prompt_tokens", "completion_tokens")  # the counters


@dataclass
class Usage:
    """Request and token accounting, summed over a stage and written to its metrics."""

    requests: int = 0  # requests that reached a backend (cache misses), retries not included
    attempts: int = 0  # HTTP attempts including retries (equals ``requests`` for the embedded model)
    cache_hits: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failures_by_reason: dict[str, int] = field(default_factory=dict)

    def add(self, other: Usage) -> None:
        for k in USAGE_KEYS:
            setattr(self, k, getattr(self, k) + getattr(other, k))
        for k, v in other.failures_by_reason.items():
            self.failures_by_reason[k] = self.failures_by_reason.get(k, 0) + v

    def to_dict(self) -> dict:
        return asdict(self)


class Backend(Protocol):
    """Anything that turns requests into outcomes. ``model_id`` names the model in cache keys."""

    model_id: str

    def generate(self, requests: list[GenRequest]) -> list[Outcome]: ...

    def close(self) -> None: ...
