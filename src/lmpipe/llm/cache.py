"""Persistent response cache: sqlite, keyed by ``GenRequest.key(model_id)``.

A rerun, or a run resumed after a crash, asks the backend only for what is not stored yet, so work already
paid for is never requested twice. sqlite in WAL mode lets several worker processes share one file.
Only successes are stored: a failure (server down, rate limited) is worth retrying on the next run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path

from lmpipe.llm.types import Backend, GenFailure, GenRequest, GenResult, Outcome, Usage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
  key TEXT PRIMARY KEY,
  model TEXT NOT NULL,
  request TEXT NOT NULL,
  response TEXT NOT NULL,
  created REAL NOT NULL
)
"""


class ResponseCache:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)

    def get_many(self, keys: list[str]) -> dict[str, GenResult]:
        out: dict[str, GenResult] = {}
        for i in range(0, len(keys), 500):  # stay under sqlite's bound-parameter limit
            chunk = keys[i : i + 500]
            rows = self._db.execute(
                f"SELECT key, response FROM responses WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            for key, resp in rows:
                out[key] = GenResult(**json.loads(resp), cached=True)
        return out

    def put(self, key: str, model: str, request: GenRequest, result: GenResult) -> None:
        resp = {
            k: getattr(result, k) for k in ("text", "finish_reason", "prompt_tokens", "completion_tokens")
        }
        if result.logprobs is not None:  # only requests that asked for them; others keep their old shape
            resp["logprobs"] = result.logprobs
        self._db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
            (
                key,
                model,
                json.dumps(asdict(request), ensure_ascii=False),
                json.dumps(resp, ensure_ascii=False),
                time.time(),
            ),
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class CachedBackend:
    """Wraps a backend: serves hits from the cache, sends only misses, stores each success at once."""

    def __init__(self, backend: Backend, cache: ResponseCache) -> None:
        self.backend, self.cache = backend, cache
        self.model_id = backend.model_id
        self.usage = Usage()

    def generate(self, requests: list[GenRequest]) -> list[Outcome]:
        keys = [r.key(self.model_id) for r in requests]
        hits = self.cache.get_many(sorted(set(keys)))
        out: list[Outcome | None] = [hits.get(k) for k in keys]
        # a request repeated inside one batch is sent once
        todo: dict[str, GenRequest] = {k: r for k, r, o in zip(keys, requests, out, strict=True) if o is None}
        self.usage.cache_hits += len(requests) - sum(o is None for o in out)
        if todo:
            before = _usage_of(self.backend)
            fresh = self.backend.generate(list(todo.values()))
            by_key = dict(zip(todo, fresh, strict=True))
            for key, result in by_key.items():
                if isinstance(result, GenResult):
                    self.cache.put(key, self.model_id, todo[key], result)
            out = [o if o is not None else by_key[k] for k, o in zip(keys, out, strict=True)]
            self._account(list(by_key.values()), before)
        return out  # type: ignore[return-value]

    def _account(self, fresh: list[Outcome], attempts_before: int) -> None:
        u = self.usage
        u.requests += len(fresh)
        after = _usage_of(self.backend)
        u.attempts += after - attempts_before if after else len(fresh)
        for r in fresh:
            if isinstance(r, GenResult):
                u.prompt_tokens += r.prompt_tokens
                u.completion_tokens += r.completion_tokens
            else:
                assert isinstance(r, GenFailure)
                u.failures += 1
                u.failures_by_reason[r.reason] = u.failures_by_reason.get(r.reason, 0) + 1

    def close(self) -> None:
        self.backend.close()
        self.cache.close()


def _usage_of(backend: Backend) -> int:
    """HTTP attempts so far (retries included) where the backend counts them, else 0."""
    return int(getattr(getattr(backend, "usage", None), "attempts", 0))
