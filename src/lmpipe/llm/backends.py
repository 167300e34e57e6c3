"""The backend a config names: the embedded model or an HTTP server, behind the response cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmpipe.llm.types import Backend

if TYPE_CHECKING:
    from lmpipe.llm.config import LLMConfig


def make_backend(cfg: LLMConfig, cache: bool = True) -> Backend:
    """The backend ``cfg`` names, behind the response cache when ``cfg.cache`` is set and ``cache``."""
    backend: Backend
    if cfg.backend == "http":
        from lmpipe.llm.http import HTTPBackend

        backend = HTTPBackend(
            cfg.base_url,
            cfg.model,
            cfg.api_key_env,
            cfg.concurrency,
            cfg.requests_per_second,
            cfg.burst,
            cfg.max_retries,
            cfg.backoff_base_s,
            cfg.backoff_max_s,
            cfg.retry_after_max_s,
            cfg.timeout_s,
        )
    else:
        from lmpipe.llm.embedded import EmbeddedBackend

        backend = EmbeddedBackend(cfg.model, cfg.gguf_file, cfg.threads, cfg.batch_size)
    if cache and cfg.cache:
        from lmpipe.llm.cache import CachedBackend, ResponseCache

        return CachedBackend(backend, ResponseCache(cfg.cache))
    return backend
