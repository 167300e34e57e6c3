"""GPU training throughput of our model at a realistic size: tokens/s and bf16 MFU, plain and FSDP on 1 GPU.

One short script for a lent GPU machine (a few minutes): the Llama-style model of ``lmpipe.model`` at
~0.34 B parameters (d_model 1024, 24 layers, seq 2048, vocab 32k), bf16 autocast, AdamW, random tokens (the
data path is not measured here). Two rows, interleaved repeats of ``--steps`` timed optimizer steps each:
the model as is on one GPU, and the same model under FSDP2 (``fully_shard`` per decoder layer) in a
1-process NCCL group, so the sharding code path and its overhead are exercised on the hardware. MFU = model
FLOPs/token (``lmpipe.model.flops_per_token``) x tokens/s over the spec-sheet bf16 peak (Lightning's table);
the peer is the peak itself. Without a GPU it says so and exits 0. Writes ``bench/results/gpu.json``.

    python bench/gpu.py [--layers 24] [--batch 8] [--steps 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPEATS, rate, table, write_result  # noqa: E402


def build(args: argparse.Namespace, vocab: int) -> torch.nn.Module:
    from lmpipe.model import build_model
    from lmpipe.training.config import ModelConfig

    cfg = ModelConfig(
        d_model=args.d_model,
        n_layers=args.layers,
        n_heads=args.d_model // 64,
        max_seq_len=args.seq,
        attn_impl="sdpa",
    )
    return build_model(cfg, vocab).cuda()


def step_fn(model: torch.nn.Module, args: argparse.Namespace, vocab: int):  # noqa: ANN201
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, vocab, (args.batch, args.seq + 1), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(input_ids=x[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timed(step, steps: int):  # noqa: ANN001, ANN201
    def run() -> None:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench/gpu.py: no CUDA device here; nothing measured (run it on a GPU machine)")
        return
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from lmpipe.model import flops_per_token, n_params
    from lmpipe.training.callbacks import peak_flops

    torch.backends.cuda.matmul.allow_tf32 = True
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29512")
    dist.init_process_group("nccl", rank=0, world_size=1)
    plain = build(args, args.vocab)
    sharded = build(args, args.vocab)
    for layer in sharded.model.layers:
        fully_shard(layer)
    fully_shard(sharded)
    paths = {
        "plain (1 GPU)": step_fn(plain, args, args.vocab),
        "FSDP2 (1 GPU)": step_fn(sharded, args, args.vocab),
    }
    for step in paths.values():  # warm-up: kernels, allocator, autotuning
        for _ in range(3):
            step()
    torch.cuda.synchronize()
    secs: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(REPEATS):
        for name, step in paths.items():
            t = time.perf_counter()
            timed(step, args.steps)()
            secs[name].append(time.perf_counter() - t)
    tokens = args.batch * args.seq * args.steps
    fpt = flops_per_token(plain.config, args.seq)
    peak, source = peak_flops(torch.device("cuda"), "bf16-mixed")
    rows = {}
    for name, s in secs.items():
        tps = rate(tokens, s)
        rows[name] = {
            "tokens_per_s": tps,
            "mfu": {
                k: (round(v * fpt / peak, 4) if k != "runs" else [round(r * fpt / peak, 4) for r in v])
                for k, v in tps.items()
            },
        }
    rows["bf16 peak"] = {"tokens_per_s": round(peak / fpt, 1), "mfu": 1.0}
    write_result(
        "gpu",
        input={
            "device": torch.cuda.get_device_name(),
            "params": n_params(plain.config),
            "seq": args.seq,
            "batch": args.batch,
            "steps_per_repeat": args.steps,
            "flops_per_token": fpt,
            "peak_source": source,
        },
        tables=[
            table("training step, bf16 autocast", "tokens_per_s", rows, ours=list(secs), peers=["bf16 peak"])
        ],
        checks={"max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)},
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
