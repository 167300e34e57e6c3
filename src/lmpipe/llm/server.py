"""``lmpipe serve-llm``: an OpenAI-compatible HTTP server around the embedded backend.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, ``GET /health`` and
``GET /stats`` (requests served, tokens, batches: tests use it to prove a rerun sent nothing).
Requests arriving together are batched: the first request opens a window of ``batch_wait_ms`` during
which up to ``batch_size`` requests join it; the batch runs on a worker thread so the event loop keeps
accepting connections. Only non-streaming, ``n=1`` requests are supported.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request  # module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse

from lmpipe.llm.types import Backend, GenRequest, GenResult, Outcome


@dataclass
class Stats:
    requests: int = 0
    chat_requests: int = 0
    completion_requests: int = 0
    batches: int = 0
    max_batch: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    started: float = field(default_factory=time.time)


class Batcher:
    """Collects concurrent requests into batches for one backend (which is never called concurrently)."""

    def __init__(self, backend: Backend, batch_size: int, wait_s: float, stats: Stats) -> None:
        self.backend, self.batch_size, self.wait_s, self.stats = backend, batch_size, wait_s, stats
        self.queue: asyncio.Queue[tuple[GenRequest, asyncio.Future[Outcome]]] = asyncio.Queue()
        self._lock = threading.Lock()

    async def submit(self, req: GenRequest) -> Outcome:
        fut: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        await self.queue.put((req, fut))
        return await fut

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self.queue.get()]
            deadline = loop.time() + self.wait_s
            while len(batch) < self.batch_size:
                timeout = deadline - loop.time()
                if timeout <= 0 and self.queue.empty():
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), max(timeout, 0)))
                except TimeoutError:
                    break
            reqs = [r for r, _ in batch]
            try:
                outs = await loop.run_in_executor(None, self._generate, reqs)
            except Exception as exc:  # a backend bug fails this batch's requests, not the server
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.max_batch = max(self.stats.max_batch, len(batch))
            for (_, fut), out in zip(batch, outs, strict=True):
                if not fut.done():
                    fut.set_result(out)

    def _generate(self, reqs: list[GenRequest]) -> list[Outcome]:
        with self._lock:
            return self.backend.generate(reqs)


def _request_from(body: dict[str, Any], chat: bool, defaults: dict[str, Any]) -> GenRequest:
    stop = body.get("stop") or ()
    kw = {
        "max_tokens": int(
            body.get("max_tokens") or body.get("max_completion_tokens") or defaults["max_tokens"]
        ),
        "temperature": float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0),
        "top_p": float(body.get("top_p") if body.get("top_p") is not None else 1.0),
        "repetition_penalty": float(body.get("repetition_penalty") or 1.0),
        "seed": int(body.get("seed") or 0),
        "stop": (stop,) if isinstance(stop, str) else tuple(stop),
    }
    if kw["max_tokens"] < 1:
        raise ValueError("max_tokens must be >= 1")
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ValueError("'messages' must be a non-empty list")
        return GenRequest(messages=tuple((str(m["role"]), _content(m.get("content"))) for m in msgs), **kw)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ValueError("'prompt' must be a string")
    return GenRequest(prompt=prompt, **kw)


def _content(content: Any) -> str:
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content or "")


def create_app(
    backend: Backend,
    model_name: str,
    batch_size: int = 8,
    batch_wait_ms: float = 20.0,
    default_max_tokens: int = 256,
) -> Any:
    stats = Stats()
    batcher = Batcher(backend, batch_size, batch_wait_ms / 1000, stats)
    defaults = {"max_tokens": default_max_tokens}

    async def lifespan(app: Any):  # noqa: ANN202 - FastAPI lifespan protocol
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(title="lmpipe serve-llm", lifespan=lifespan)
    app.state.stats = stats

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        stats.errors += 1
        return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)

    async def serve(request: Request, chat: bool) -> Any:
        try:
            body = await request.json()
            req = _request_from(body, chat, defaults)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return error(400, f"bad request: {exc}")
        if body.get("stream"):
            return error(400, "streaming is not supported")
        stats.requests += 1
        if chat:
            stats.chat_requests += 1
        else:
            stats.completion_requests += 1
        out = await batcher.submit(req)
        if not isinstance(out, GenResult):
            return error(500, f"{out.reason}: {out.detail}", "server_error")
        stats.prompt_tokens += out.prompt_tokens
        stats.completion_tokens += out.completion_tokens
        choice: dict[str, Any] = {"index": 0, "finish_reason": out.finish_reason, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": out.text}
        else:
            choice["text"] = out.text
        return {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model_name,
            "choices": [choice],
            "usage": {
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
                "total_tokens": out.prompt_tokens + out.completion_tokens,
            },
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await serve(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await serve(request, chat=False)

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "lmpipe"}]}

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/stats")
    async def get_stats() -> dict:
        return {
            **stats.__dict__,
            "model": model_name,
            "model_id": backend.model_id,
            "uptime_s": time.time() - stats.started,
        }

    return app


def serve(
    backend: Backend,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    batch_size: int = 8,
    batch_wait_ms: float = 20.0,
) -> None:
    import uvicorn

    app = create_app(backend, model_name, batch_size, batch_wait_ms)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
