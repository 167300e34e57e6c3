"""Config of the LLM client (section ``llm``): which backend the LLM stages call, and how."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmpipe.sections import Section


class LLMConfig(Section):
    """Which LLM the synthetic-data stages call, and how. Read by ``augment`` and ``lmpipe serve-llm``."""

    backend: Literal["embedded", "http"] = Field(
        "embedded", description="in-process model, or an OpenAI-compatible server"
    )
    model: str = Field(
        "smollm2",
        min_length=1,
        description="embedded: 'smollm2', a local HF model dir or .gguf file; http: the served model name",
    )
    gguf_file: str | None = Field(None, description="GGUF file inside an embedded model dir")
    threads: int = Field(2, ge=1, le=256, description="torch threads for the embedded model")
    batch_size: int = Field(
        8, ge=1, le=1024, description="sequences generated together by the embedded model"
    )
    base_url: str = Field("http://127.0.0.1:8000/v1", description="http: server root up to /v1")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="http: env var holding the API key (never put keys in params)"
    )
    concurrency: int = Field(8, ge=1, le=4096, description="http: requests in flight")
    requests_per_second: float = Field(0.0, ge=0, description="http: token-bucket rate limit; 0 = none")
    burst: int = Field(8, ge=1, description="http: token-bucket capacity")
    max_retries: int = Field(4, ge=0, le=20, description="http: retries after the first attempt")
    backoff_base_s: float = Field(
        0.5, gt=0, description="http: first retry delay (doubles each retry, jittered)"
    )
    backoff_max_s: float = Field(30.0, gt=0)
    retry_after_max_s: float = Field(120.0, gt=0, description="http: cap on a server's Retry-After")
    timeout_s: float = Field(120.0, gt=0, description="http: per-attempt timeout")
    cache: str | None = Field("data/.cache/llm.sqlite", description="persistent response cache; null = off")
