"""Evaluation throughput: lmpipe's held-out scoring path vs plain `transformers` forward loops, same model,
same documents, same windows, same run.

- lmpipe: ``heldout_metrics`` (length-sorted batches under a padded-token budget; the vocabulary projection
  only for target positions, in chunks).
- transformers, plain loop: one ``model(input_ids, labels=input_ids)`` per window, batch 1 (the textbook way).
- transformers, batched: the same padded batches as lmpipe, full logits, ``labels=-100`` on padding.

All three score exactly the same tokens; the script checks they agree on bits/byte. A second workload
scores closed-book multiple choice (``data/eval/fiction_qa.jsonl``, or the demo generator's QA set for
``--qa-entities`` organisations when the demo stage has not run): lmpipe's ``multiple_choice`` vs one
``labels=``-masked forward per (question, option). Wall and CPU seconds, median and spread of the repeats.
Model: ``models/pretrain`` when present, else a random Llama shaped like params ``model`` (with
``models/tokenizer`` when present). Text: ``../shared/data`` prose (WikiText-2), code (SymPy), math (GSM8K).

    python bench/eval.py [--docs-per-domain 20] [--qa-entities 10]     # -> bench/results/eval.json
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
from _common import REPEATS, ROOT, rate, require_shared, table, write_result  # noqa: E402

from lmpipe.documents import Document  # noqa: E402
from lmpipe.evaluation.config import HeldoutConfig  # noqa: E402
from lmpipe.evaluation.heldout import heldout_metrics  # noqa: E402
from lmpipe.evaluation.lm import LM, _token_batches, windows  # noqa: E402

BATCH_TOKENS = 1024
QA_FILE = ROOT / "data" / "eval" / "fiction_qa.jsonl"  # written by the demo stage


def load_docs(shared: Path, per_domain: int) -> list[Document]:
    docs = []
    paras = [p.strip() for p in (shared / "wikitext-2" / "valid.txt").read_text().split("\n \n") if len(p.strip()) > 400]
    docs += [Document(f"prose-{i}", t[:3000], "prose", "wikitext-2") for i, t in enumerate(paras[:per_domain])]
    for domain, rel in (("code", "domains/code/sympy_python.jsonl"), ("math", "domains/math/gsm8k_train.jsonl")):
        with (shared / rel).open() as f:
            for i, line in zip(range(per_domain), f, strict=False):
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


def timed(fn) -> tuple[list[float], list[float], object]:  # noqa: ANN001
    """Wall and CPU seconds of each of REPEATS runs (CPU time is steadier on a shared machine)."""
    wall, cpu, out = [], [], None
    for _ in range(REPEATS):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return wall, cpu, out


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs-per-domain", type=int, default=20, help="prose, code and math documents each")
    ap.add_argument("--qa-entities", type=int, default=10, help="demo organisations for the QA set (if generated)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    docs = load_docs(require_shared(), args.docs_per_domain)
    with tempfile.TemporaryDirectory() as tmp:
        lm, model_desc = load_model(Path(tmp), docs)
        items, qa_source = qa_items(Path(tmp), args.qa_entities)
    wins = all_windows(lm, docs)
    tokens = sum(len(w) - 1 for w in wins)
    nbytes = sum(len(d.text.encode()) for d in docs)
    cfg = HeldoutConfig(max_docs_per_domain=10**9, max_tokens_per_domain=10**12)
    paths = {
        "lmpipe heldout_metrics": lambda: heldout_metrics(lm, docs, cfg, BATCH_TOKENS)["all"]["bits_per_byte"],
        "transformers loop (batch 1, labels=)": lambda: hf_loop(lm, wins) / (math.log(2) * nbytes),
        "transformers batched (same batches, full logits)": lambda: hf_batched(lm, wins) / (math.log(2) * nbytes),
    }
    rows, bpb = {}, {}
    for name, fn in paths.items():
        wall, cpu, bpb[name] = timed(fn)
        rows[name] = {"tokens_per_cpu_s": rate(tokens, cpu, 0), "tokens_per_s": rate(tokens, wall, 0)}
    agree = max(abs(float(v) - float(bpb["lmpipe heldout_metrics"])) for v in bpb.values())
    tables = [table("held-out scoring (bits/byte), 1 thread", "tokens_per_cpu_s", rows,
                    ours=["lmpipe heldout_metrics"],
                    peers=["transformers loop (batch 1, labels=)", "transformers batched (same batches, full logits)"])]
    checks = {"bits_per_byte": {k: round(float(v), 6) for k, v in bpb.items()}, "bits_per_byte_max_abs_diff": agree}
    qa_table, qa_checks = qa_workload(lm, items)
    tables.append(qa_table)
    write_result(
        "eval",
        input={"model": model_desc, "vocab": len(lm.tokenizer), "context": lm.max_len, "threads": 1,
               "docs_per_domain_flag": args.docs_per_domain, "docs": len(docs), "windows": len(wins),
               "tokens": tokens, "bytes": nbytes, "batch_tokens": BATCH_TOKENS, "qa_source": qa_source,
               "qa_questions": len(items)},
        tables=tables, checks={**checks, **qa_checks},
        notes=["Ranked by CPU time (steadier than wall time on a shared machine); lmpipe's scoring row includes "
               "reading and tokenising the documents."],
    )
    if agree > 1e-3:
        raise SystemExit(f"paths disagree on bits/byte by {agree}")


def qa_items(tmp: Path, entities: int) -> tuple[list, str]:
    import random

    from lmpipe.demo import world
    from lmpipe.evaluation.qa import load_qa

    path, source = QA_FILE, "data/eval/fiction_qa.jsonl (demo stage)"
    if not path.exists():  # the demo stage's QA generator, on its own
        orgs, rng = world.make_world(entities, 0), random.Random(0)
        path, source = tmp / "fiction_qa.jsonl", f"demo QA generator, {entities} organisations, seed 0"
        path.write_text("".join(json.dumps(q) + "\n" for o in orgs for q in world.questions(o, orgs, rng)))
    return load_qa(path).items, source


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


def qa_workload(lm: LM, items: list) -> tuple[dict, dict]:
    from lmpipe.evaluation.config import QAConfig
    from lmpipe.evaluation.qa import multiple_choice

    cfg = QAConfig(normalise="chars")
    _, c1, (summary, rows) = timed(lambda: multiple_choice(lm, items, cfg, BATCH_TOKENS))
    _, c2, preds = timed(lambda: hf_mc_loop(lm, items, cfg.template))
    same = sum(r["pred"] == p for r, p in zip(rows, preds, strict=True)) / len(items)
    qa_rows = {"lmpipe multiple_choice": {"questions_per_cpu_s": rate(len(items), c1, 1)},
               "transformers loop (labels= masked)": {"questions_per_cpu_s": rate(len(items), c2, 1)}}
    return (table(f"closed-book multiple choice, {len(items)} questions, {sum(len(it.choices) for it in items)} "
                  "options in all", "questions_per_cpu_s", qa_rows,
                  ours=["lmpipe multiple_choice"], peers=["transformers loop (labels= masked)"]),
            {"qa_same_predictions": same})


if __name__ == "__main__":
    main()
