"""Evaluation throughput: lmpipe's held-out scoring path vs plain `transformers` forward loops, same model,
same documents, same windows, same run.

- lmpipe: ``heldout_metrics`` (length-sorted batches under a padded-token budget; the vocabulary projection
  only for target positions, in chunks).
- transformers, plain loop: one ``model(input_ids, labels=input_ids)`` per window, batch 1 (the textbook way).
- transformers, batched: the same padded batches as lmpipe, full logits, ``labels=-100`` on padding.

All three score exactly the same tokens; the script checks they agree on bits/byte. A second workload
scores closed-book multiple choice (``data/eval/fiction_qa.jsonl``, when the demo stage has made it): lmpipe's
``multiple_choice`` vs one ``labels=``-masked forward per (question, option).
Model: ``models/pretrain`` when present, else a random Llama shaped like params ``model`` (with
``models/tokenizer`` when present). Text: ``../shared/data`` prose (WikiText-2), code (SymPy), math (GSM8K).

    python bench/eval.py        # -> bench/results/eval.json
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, require_shared, write_result  # noqa: E402

from lmpipe.config import HeldoutConfig  # noqa: E402
from lmpipe.documents import Document  # noqa: E402
from lmpipe.evaluation.heldout import heldout_metrics  # noqa: E402
from lmpipe.evaluation.lm import LM, _token_batches, windows  # noqa: E402

DOCS_PER_DOMAIN = 40
BATCH_TOKENS = 1024
QA_FILE = ROOT / "data" / "eval" / "fiction_qa.jsonl"  # written by the demo stage


def load_docs(shared: Path) -> list[Document]:
    docs = []
    paras = [p.strip() for p in (shared / "wikitext-2" / "valid.txt").read_text().split("\n \n") if len(p.strip()) > 400]
    docs += [Document(f"prose-{i}", t[:3000], "prose", "wikitext-2") for i, t in enumerate(paras[:DOCS_PER_DOMAIN])]
    for domain, rel in (("code", "domains/code/sympy_python.jsonl"), ("math", "domains/math/gsm8k_train.jsonl")):
        with (shared / rel).open() as f:
            for i, line in zip(range(DOCS_PER_DOMAIN), f, strict=False):
                docs.append(Document(f"{domain}-{i}", json.loads(line)["text"][:3000], domain, rel))
    return docs


def load_model(tmp: Path, docs: list[Document]) -> tuple[LM, str]:
    if (ROOT / "models" / "pretrain" / "config.json").exists():
        return LM.load(ROOT / "models" / "pretrain", "pretrain"), "models/pretrain"
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lmpipe.config import load_params
    from lmpipe.tiny import train_tokenizer

    if (ROOT / "models" / "tokenizer" / "tokenizer.json").exists():
        tok = AutoTokenizer.from_pretrained(ROOT / "models" / "tokenizer")
    else:
        tok = train_tokenizer((d.text for d in docs), 4096)
    m = load_params(ROOT / "params.yaml").model if hasattr(load_params(ROOT / "params.yaml"), "model") else None
    d, layers, heads, ctx = (m.d_model, m.n_layers, m.n_heads, m.max_seq_len) if m else (128, 4, 4, 256)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=d, intermediate_size=d * 8 // 3, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=ctx,
                      tie_word_embeddings=True, eos_token_id=tok.eos_token_id)
    return LM.wrap(LlamaForCausalLM(cfg).eval(), tok, "random"), f"random llama d={d} L={layers} ctx={ctx}"


def all_windows(lm: LM, docs: list[Document]) -> list[list[int]]:
    return [s.ids for ids in lm.encode([d.text for d in docs]) for s in windows(ids, lm.start_id, lm.max_len)]


@torch.inference_mode()
def hf_loop(lm: LM, wins: list[list[int]]) -> float:
    nll = 0.0
    for w in wins:
        ids = torch.tensor([w])
        nll += lm.model(input_ids=ids, labels=ids).loss.item() * (len(w) - 1)
    return nll


@torch.inference_mode()
def hf_batched(lm: LM, wins: list[list[int]]) -> float:
    nll = 0.0
    for idx in _token_batches([len(w) for w in wins], BATCH_TOKENS):
        width = len(wins[idx[0]])
        ids = torch.full((len(idx), width), lm.pad_id)
        labels = torch.full((len(idx), width), -100)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(wins[i])] = labels[r, : len(wins[i])] = torch.tensor(wins[i])
            mask[r, : len(wins[i])] = 1
        n = int((labels[:, 1:] != -100).sum())
        nll += lm.model(input_ids=ids, attention_mask=mask, labels=labels).loss.item() * n
    return nll


def timed(fn, repeats: int = 2) -> tuple[float, float, object]:
    """Best wall and best CPU seconds of ``repeats`` runs (CPU time is steadier on a shared machine)."""
    wall = cpu = float("inf")
    out = None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = min(wall, time.perf_counter() - w), min(cpu, time.process_time() - c)
    return wall, cpu, out


def main() -> None:
    torch.set_num_threads(1)
    docs = load_docs(require_shared())
    with tempfile.TemporaryDirectory() as tmp:
        lm, model_desc = load_model(Path(tmp), docs)
    wins = all_windows(lm, docs)
    tokens = sum(len(w) - 1 for w in wins)
    nbytes = sum(len(d.text.encode()) for d in docs)
    cfg = HeldoutConfig(max_docs_per_domain=10**9, max_tokens_per_domain=10**12)
    paths = {
        "lmpipe heldout_metrics": lambda: heldout_metrics(lm, docs, cfg, BATCH_TOKENS)["all"]["bits_per_byte"],
        "transformers loop (batch 1, labels=)": lambda: hf_loop(lm, wins) / (math.log(2) * nbytes),
        "transformers batched (same batches, full logits)": lambda: hf_batched(lm, wins) / (math.log(2) * nbytes),
    }
    rows = {}
    for name, fn in paths.items():
        wall, cpu, bpb = timed(fn)
        rows[name] = {"seconds": round(wall, 3), "cpu_seconds": round(cpu, 3), "tokens_per_s": round(tokens / wall),
                      "tokens_per_cpu_s": round(tokens / cpu), "bits_per_byte": round(float(bpb), 6)}
    base = rows["transformers loop (batch 1, labels=)"]
    best_peer = max((r for n, r in rows.items() if n.startswith("transformers")), key=lambda r: r["tokens_per_cpu_s"])
    ours = rows["lmpipe heldout_metrics"]
    agree = max(abs(r["bits_per_byte"] - ours["bits_per_byte"]) for r in rows.values())
    write_result("eval", {
        "model": model_desc, "vocab": len(lm.tokenizer), "context": lm.max_len, "threads": 1,
        "docs": len(docs), "windows": len(wins), "tokens": tokens, "bytes": nbytes, "batch_tokens": BATCH_TOKENS,
        "paths": rows, "bits_per_byte_max_abs_diff": agree,
        "speedup_vs_plain_loop_cpu": round(ours["tokens_per_cpu_s"] / base["tokens_per_cpu_s"], 2),
        "speedup_vs_best_peer_cpu": round(ours["tokens_per_cpu_s"] / best_peer["tokens_per_cpu_s"], 2),
        "qa_multiple_choice": qa_workload(lm),
    })
    if agree > 1e-3:
        raise SystemExit(f"paths disagree on bits/byte by {agree}")


@torch.inference_mode()
def hf_mc_loop(lm: LM, items: list, template: str) -> list[int]:
    """Per (question, option): one forward with the prompt masked out of the loss; chars-normalised argmax."""
    preds = []
    for it in items:
        ctx = [lm.start_id, *lm.encode([template.format(title=it.title, question=it.question)])[0]]
        scores = []
        for c in it.choices:
            cont = lm.encode([" " + c])[0]
            ids = torch.tensor([ctx + cont])
            labels = ids.clone()
            labels[0, : len(ctx)] = -100
            scores.append(-lm.model(input_ids=ids, labels=labels).loss.item() * len(cont) / len(" " + c))
        preds.append(max(range(len(scores)), key=scores.__getitem__))
    return preds


def qa_workload(lm: LM) -> dict:
    from lmpipe.config import QAConfig
    from lmpipe.evaluation.qa import load_qa, multiple_choice

    if not QA_FILE.exists():
        return {"skipped": f"{QA_FILE} not found (run `dvc repro demo`)"}
    items = load_qa(QA_FILE).items
    cfg = QAConfig(normalise="chars")
    spans_tokens = sum(len(lm.encode([" " + c])[0]) for it in items for c in it.choices)
    w1, c1, (summary, rows) = timed(lambda: multiple_choice(lm, items, cfg, BATCH_TOKENS))
    w2, c2, preds = timed(lambda: hf_mc_loop(lm, items, cfg.template))
    same = sum(r["pred"] == p for r, p in zip(rows, preds, strict=True)) / len(items)
    return {
        "questions": len(items), "options": sum(len(it.choices) for it in items), "target_tokens": spans_tokens,
        "lmpipe multiple_choice": {"seconds": round(w1, 3), "cpu_seconds": round(c1, 3),
                                   "questions_per_cpu_s": round(len(items) / c1, 1)},
        "transformers loop (labels= masked)": {"seconds": round(w2, 3), "cpu_seconds": round(c2, 3),
                                               "questions_per_cpu_s": round(len(items) / c2, 1)},
        "same_predictions": same,
        "speedup_cpu": round(c2 / c1, 2),
    }


if __name__ == "__main__":
    main()
