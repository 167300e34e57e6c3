"""``lmpipe serve-llm``: an OpenAI-compatible HTTP server around the embedded backend.

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, ``GET /health`` and
``GET /stats`` (requests served, tokens, batches: tests use it to prove a rerun sent nothing).
Requests arriving together are batched: the first request opens a window of ``batch_wait_ms`` during
which up to ``batch_size`` generations join it (a request with ``n`` choices brings ``n``); the batch runs
on a worker thread so the event loop keeps accepting connections. Streamed requests get their tokens as
server-sent events while their batch runs. What the request bodies may hold is in ``openai_api``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import FastAPI, Request  # module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse, StreamingResponse

from lmpipe.llm import openai_api as api
from lmpipe.llm.types import GenFailure, GenRequest, GenResult, OnToken, Outcome, TokenLogprob

Sink = Callable[[str, "TokenLogprob | None"], None]


class StreamingBackend(Protocol):
    """A backend that can report tokens as they are generated (``EmbeddedBackend``)."""

    model_id: str

    def generate(self, requests: list[GenRequest], on_token: OnToken | None = None) -> list[Outcome]: ...


@dataclass
class Stats:
    requests: int = 0
    chat_requests: int = 0
    completion_requests: int = 0
    streamed_requests: int = 0
    batches: int = 0
    max_batch: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    started: float = field(default_factory=time.time)


class Batcher:
    """Collects concurrent requests into batches for one backend (which is never called concurrently)."""

    def __init__(self, backend: StreamingBackend, batch_size: int, wait_s: float, stats: Stats) -> None:
        self.backend, self.batch_size, self.wait_s, self.stats = backend, batch_size, wait_s, stats
        self.queue: asyncio.Queue[tuple[GenRequest, asyncio.Future[Outcome], Sink | None]] = asyncio.Queue()
        self._lock = threading.Lock()

    async def submit(self, req: GenRequest, sink: Sink | None = None) -> Outcome:
        """The outcome of ``req``; ``sink(text_delta, logprob)`` is called on the event loop per token."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Outcome] = loop.create_future()
        threadsafe = None
        if sink is not None:
            threadsafe = lambda d, lp: loop.call_soon_threadsafe(sink, d, lp)  # noqa: E731
        await self.queue.put((req, fut, threadsafe))
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
            reqs, sinks = [r for r, _, _ in batch], [s for _, _, s in batch]
            try:
                outs = await loop.run_in_executor(None, self._generate, reqs, sinks)
            except Exception as exc:  # a backend bug fails this batch's requests, not the server
                for _, fut, _ in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.stats.batches += 1
            self.stats.max_batch = max(self.stats.max_batch, len(batch))
            for (_, fut, _), out in zip(batch, outs, strict=True):
                if not fut.done():
                    fut.set_result(out)

    def _generate(self, reqs: list[GenRequest], sinks: list[Sink | None]) -> list[Outcome]:
        with self._lock:
            if not any(sinks):
                return self.backend.generate(reqs)

            def on_token(i: int, delta: str, lp: TokenLogprob | None) -> None:
                if sinks[i] is not None:
                    sinks[i](delta, lp)

            return self.backend.generate(reqs, on_token=on_token)


def create_app(
    backend: StreamingBackend,
    model_name: str,
    batch_size: int = 8,
    batch_wait_ms: float = 20.0,
    default_max_tokens: int = 256,
) -> Any:
    stats = Stats()
    batcher = Batcher(backend, batch_size, batch_wait_ms / 1000, stats)

    async def lifespan(app: Any):  # noqa: ANN202 - FastAPI lifespan protocol
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(title="lmpipe serve-llm", lifespan=lifespan)
    app.state.stats = stats

    def error(
        status: int,
        message: str,
        param: str | None = None,
        kind: str = "invalid_request_error",
        code: str | None = None,
    ) -> JSONResponse:
        stats.errors += 1
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return JSONResponse(body, status_code=status)

    async def serve(request: Request, chat: bool) -> Any:
        try:
            body, groups = api.parse(await request.body(), chat, default_max_tokens)
        except api.BadRequest as exc:
            return error(400, exc.message, exc.param)
        if body.model is not None and body.model != model_name:
            return error(404, f"model {body.model!r} not found (this server serves {model_name!r})",
                         "model", code="model_not_found")  # fmt: skip
        stats.requests += 1
        if chat:
            stats.chat_requests += 1
        else:
            stats.completion_requests += 1
        prompts = [] if chat else body.prompts()  # type: ignore[union-attr]
        if body.stream:
            stats.streamed_requests += 1
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(
                stream(chat, groups, prompts, include_usage), media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )  # fmt: skip
        flat = await asyncio.gather(*(batcher.submit(r) for g in groups for r in g))
        bad = next((o for o in flat if not isinstance(o, GenResult)), None)
        if bad is not None:
            assert isinstance(bad, GenFailure)
            if bad.reason == "bad_request":  # e.g. a json_schema the constraint compiler cannot use
                return error(400, bad.detail, "response_format")
            return error(500, f"{bad.reason}: {bad.detail}", kind="server_error")
        outs = _regroup(flat, groups)  # type: ignore[arg-type]
        _count(outs)
        return api.response(chat, model_name, outs, prompts)

    def _count(outs: list[list[GenResult]]) -> None:
        stats.prompt_tokens += sum(g[0].prompt_tokens for g in outs)
        stats.completion_tokens += sum(o.completion_tokens for g in outs for o in g)

    async def stream(
        chat: bool, groups: list[list[GenRequest]], prompts: list[str], include_usage: bool
    ) -> AsyncIterator[str]:
        w = api.ChunkWriter(chat, model_name)
        flat_reqs = [r for g in groups for r in g]
        events: asyncio.Queue[tuple[int, str, TokenLogprob | None] | None] = asyncio.Queue()
        sent = [""] * len(flat_reqs)  # text streamed per choice
        offsets = [len(prompts[p]) if prompts else 0 for p, g in enumerate(groups) for _ in g]

        def sink_for(index: int) -> Sink:
            return lambda delta, lp: events.put_nowait((index, delta, lp))

        for i in range(len(flat_reqs)):
            if (first := w.start(i)) is not None:
                yield first
        everything = asyncio.gather(*(batcher.submit(r, sink_for(i)) for i, r in enumerate(flat_reqs)))
        # token events reach the loop before the batch's result does, so the sentinel comes after them all
        everything.add_done_callback(lambda _: events.put_nowait(None))
        while (event := await events.get()) is not None:
            i, delta, lp = event
            if delta or lp is not None:
                yield w.delta(i, delta, lp, offsets[i] + len(sent[i]))
                sent[i] += delta
        try:
            flat = everything.result()
        except Exception as exc:  # the batch failed: tell the client in-band, the status is already sent
            stats.errors += 1
            yield w.error(f"{type(exc).__name__}: {exc}")
            yield w.DONE
            return
        for i, out in enumerate(flat):
            if not isinstance(out, GenResult):
                stats.errors += 1
                yield w.error(f"{out.reason}: {out.detail}")
                yield w.DONE
                return
            rest = out.text[len(sent[i]) :] if out.text.startswith(sent[i]) else ""
            if rest:  # what was held back (a possible stop string, a partial character)
                yield w.delta(i, rest, None, offsets[i] + len(sent[i]))
            yield w.finish(i, out.finish_reason)
        outs = _regroup(flat, groups)  # type: ignore[arg-type]
        _count(outs)
        if include_usage:
            yield w.usage(
                sum(g[0].prompt_tokens for g in outs), sum(o.completion_tokens for g in outs for o in g)
            )
        yield w.DONE

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await serve(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await serve(request, chat=False)

    @app.get("/v1/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [
                {"id": model_name, "object": "model", "created": int(stats.started), "owned_by": "lmpipe"}
            ],
        }

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


def _regroup(flat: list[GenResult], groups: list[list[GenRequest]]) -> list[list[GenResult]]:
    out, i = [], 0
    for g in groups:
        out.append(flat[i : i + len(g)])
        i += len(g)
    return out


def serve(
    backend: StreamingBackend,
    model_name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    batch_size: int = 8,
    batch_wait_ms: float = 20.0,
) -> None:
    import uvicorn

    app = create_app(backend, model_name, batch_size, batch_wait_ms)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
