"""The OpenAI wire format as ``serve-llm`` speaks it: request bodies (validated; every field is either
honoured or rejected with a 400 that names it, never silently dropped) and the response, chunk and logprobs
shapes of ``/v1/chat/completions`` and ``/v1/completions``.

Honoured: model, messages / prompt (a string or a list of strings), max_tokens (max_completion_tokens),
temperature, top_p, n, seed, stop, stream (+ stream_options.include_usage), logprobs (+ top_logprobs),
response_format (text, json_object, json_schema) and the common ``repetition_penalty`` extension.
Accepted only at their neutral value (so clients that always send them work): frequency_penalty and
presence_penalty 0, an empty logit_bias, no tools, echo false, no suffix, best_of 1. ``user`` is accepted:
it identifies the caller and never changes the output.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lmpipe.llm.types import GenRequest, GenResult, TokenLogprob

MAX_N = 16  # choices per request: each is a full generation in the batch
MAX_TOP_LOGPROBS_CHAT, MAX_TOP_LOGPROBS_COMPLETION = 20, 5  # OpenAI's own limits


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JSONSchemaSpec(_Strict):
    name: str = "output"
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaSpec | None = None

    def canonical(self) -> str:
        """``GenRequest.response_format``: "" for text, else compact JSON (a stable cache key)."""
        if self.type == "text":
            return ""
        if self.type == "json_object":
            return json.dumps({"type": "json_object"}, separators=(",", ":"))
        if self.json_schema is None:
            raise ValueError("response_format.json_schema is required when type is 'json_schema'")
        spec = {"name": self.json_schema.name, "schema": self.json_schema.schema_, "strict": True}
        # keys keep their order: a schema's property order is the order the model writes them in
        return json.dumps({"type": "json_schema", "json_schema": spec}, separators=(",", ":"))


class StreamOptions(_Strict):
    include_usage: bool = False


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class _Common(_Strict):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = Field(None, ge=1, le=MAX_N)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    user: str | None = None
    # accepted at their neutral value only
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _zero(cls, v: float | None) -> float | None:
        if v not in (None, 0):
            raise ValueError("not supported by this server (only 0)")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _empty(cls, v: dict | None) -> dict | None:
        if v:
            raise ValueError("not supported by this server (only empty)")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    def sampling(self, default_max_tokens: int, top_logprobs: int | None) -> dict[str, Any]:
        stop = self.stop or ()
        return {
            "max_tokens": self.max_tokens or default_max_tokens,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "repetition_penalty": self.repetition_penalty or 1.0,
            "seed": self.seed or 0,
            "stop": (stop,) if isinstance(stop, str) else tuple(stop),
            "logprobs": top_logprobs is not None,
            "top_logprobs": top_logprobs or 0,
            "response_format": self.response_format.canonical() if self.response_format else "",
        }


class ChatBody(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS_CHAT)
    tools: list[Any] | None = None
    tool_choice: Literal["none"] | None = None

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, v: list | None) -> list | None:
        if v:
            raise ValueError("tool calling is not supported by this server")
        return v

    def requests(self, default_max_tokens: int) -> list[list[GenRequest]]:
        if self.top_logprobs is not None and not self.logprobs:
            raise BadRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs")
        kw = self.sampling(self.max_completion_tokens or default_max_tokens, self.top_logprobs or 0)
        if not self.logprobs:
            kw["logprobs"], kw["top_logprobs"] = False, 0
        messages = tuple((m.role, m.text()) for m in self.messages)
        return [[GenRequest(messages=messages, **{**kw, "seed": kw["seed"] + j}) for j in range(self.n or 1)]]


class CompletionBody(_Common):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS_COMPLETION)
    echo: Literal[False] | None = None
    suffix: None = None
    best_of: Literal[1] | None = None

    @field_validator("prompt")
    @classmethod
    def _some(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("at least one prompt")
        return v

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

    def requests(self, default_max_tokens: int) -> list[list[GenRequest]]:
        kw = self.sampling(default_max_tokens, self.logprobs)
        n = self.n or 1
        return [
            [GenRequest(prompt=p, **{**kw, "seed": kw["seed"] + j}) for j in range(n)] for p in self.prompts()
        ]


def parse(
    raw: bytes, chat: bool, default_max_tokens: int
) -> tuple[ChatBody | CompletionBody, list[list[GenRequest]]]:
    """(body, requests per prompt, one per choice) or ``BadRequest`` naming the offending field."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"body is not JSON: {exc}", None) from None
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object", None)
    try:
        body = (ChatBody if chat else CompletionBody).model_validate(data)
        return body, body.requests(default_max_tokens)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "json-or-python")))
        loc = loc.replace(".schema_", ".schema")
        if err["type"] == "extra_forbidden":
            raise BadRequest(f"unsupported field '{loc}': this server does not implement it", loc) from None
        raise BadRequest(f"invalid '{loc}': {err['msg']}", loc) from None
    except ValueError as exc:
        raise BadRequest(str(exc), None) from None


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.message, self.param = message, param


# ------------------------------------------------------------------------------------- responses
def new_id(chat: bool) -> str:
    return f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"


def completion_logprobs(entries: list[TokenLogprob], offset: int) -> dict[str, Any]:
    """The legacy ``/v1/completions`` logprobs shape; the chosen token is always in its position's dict."""
    tokens, offsets, top = [], [], []
    for e in entries:
        tokens.append(e["token"])
        offsets.append(offset)
        offset += len(e["token"])
        alts = {a["token"]: a["logprob"] for a in e["top_logprobs"]}
        alts.setdefault(e["token"], e["logprob"])
        top.append(alts)
    return {"tokens": tokens, "token_logprobs": [e["logprob"] for e in entries], "top_logprobs": top,
            "text_offset": offsets}  # fmt: skip


def logprobs_field(entries: list[TokenLogprob] | None, chat: bool, offset: int = 0) -> dict[str, Any] | None:
    if entries is None:
        return None
    return {"content": entries, "refusal": None} if chat else completion_logprobs(entries, offset)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def response(chat: bool, model: str, outs: list[list[GenResult]], prompts: list[str]) -> dict[str, Any]:
    """A whole (non-streamed) response: choices numbered prompt by prompt, ``n`` per prompt."""
    choices = []
    for p, group in enumerate(outs):
        for out in group:
            choice: dict[str, Any] = {"index": len(choices), "finish_reason": out.finish_reason}
            choice["logprobs"] = logprobs_field(out.logprobs, chat, len(prompts[p]) if not chat else 0)
            if chat:
                choice["message"] = {"role": "assistant", "content": out.text, "refusal": None}
            else:
                choice["text"] = out.text
            choices.append(choice)
    return {
        "id": new_id(chat),
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(
            sum(g[0].prompt_tokens for g in outs), sum(o.completion_tokens for g in outs for o in g)
        ),
    }


class ChunkWriter:
    """Server-sent events of one streamed response, each ``data: <chunk JSON>\\n\\n``."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat, self.model = chat, model
        self.id, self.created = new_id(chat), int(time.time())

    def _event(self, choices: list[dict[str, Any]], **extra: Any) -> str:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    def start(self, index: int) -> str | None:
        """Chat streams open each choice with the assistant role (no text yet)."""
        if not self.chat:
            return None
        return self._event([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}])  # fmt: skip

    def delta(self, index: int, text: str, entry: TokenLogprob | None, offset: int = 0) -> str:
        lp = logprobs_field([entry], self.chat, offset) if entry is not None else None
        body = {"delta": {"content": text}} if self.chat else {"text": text}
        return self._event([{"index": index, **body, "logprobs": lp, "finish_reason": None}])

    def finish(self, index: int, reason: str) -> str:
        body = {"delta": {}} if self.chat else {"text": ""}
        return self._event([{"index": index, **body, "logprobs": None, "finish_reason": reason}])

    def usage(self, prompt_tokens: int, completion_tokens: int) -> str:
        return self._event([], usage=usage(prompt_tokens, completion_tokens))

    @staticmethod
    def error(message: str) -> str:
        return f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"

    DONE = "data: [DONE]\n\n"
