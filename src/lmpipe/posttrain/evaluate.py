"""Post-training metrics for ``evaluate``: what SFT, DPO and RLVR should move, on held-out items.

- chat-format closed-book QA exact match on the held-out fictional questions (entities and wording never
  trained on; see :mod:`lmpipe.demo.instruct`);
- math accuracy by ``math-verify`` on held-out problems (and any GSM8K-format file);
- preference accuracy and margin on held-out pairs (per-token log-probs, policy only);
- mean response length (characters) of the generated answers.
Models with a chat template are prompted through it; others (the base and cpt models) with
``Question: ...\\nAnswer:``, the format their pretraining data used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmpipe.posttrain.config import PosttrainEvalConfig
from lmpipe.posttrain.preference import preference_metrics
from lmpipe.posttrain.rewards import final_answer, math_reward, qa_reward

PLAIN = "Question: {question}\nAnswer:"


def _rows(path: str | Path, limit: int | None) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"evaluate.posttrain: {path} not found (the demo stage writes the held-out sets)"
        )
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def prompt_for(tok: Any, question: str) -> str:
    """The prompt text after the model's start token (``generate`` and scoring add that token themselves)."""
    if not tok.chat_template:
        return PLAIN.format(question=question)
    from lmpipe.posttrain.chat import render

    text = render(tok, [{"role": "user", "content": question}], generation_prompt=True)
    bos = tok.bos_token or ""
    return text.removeprefix(bos)


def _answers(lm: Any, questions: list[str], cfg: PosttrainEvalConfig, batch_size: int) -> list[str]:
    from lmpipe.evaluation.lm import generate

    outs = generate(lm, [prompt_for(lm.tokenizer, q) for q in questions], cfg.max_new_tokens, batch_size)
    return [o[0].strip() for o in outs]


def posttrain_metrics(
    lm: Any, cfg: PosttrainEvalConfig, batch_size: int = 16
) -> tuple[dict[str, Any], list[dict]]:
    res: dict[str, Any] = {"format": "chat" if lm.tokenizer.chat_template else "plain"}
    samples: list[dict] = []
    lengths: list[int] = []

    def keep(kind: str, q: str, ans: str, gold: str, ok: float) -> None:
        lengths.append(len(ans))
        if sum(1 for s in samples if s["kind"] == kind) < cfg.samples:
            samples.append(
                {
                    "model": lm.name,
                    "kind": kind,
                    "prompt": q,
                    "completion": ans,
                    "answer": gold,
                    "correct": bool(ok),
                }
            )

    if cfg.qa:
        items = _rows(cfg.qa, cfg.max_items)
        answers = _answers(lm, [it["question"] for it in items], cfg, batch_size)
        hits = [qa_reward(a, it["answer"]) for a, it in zip(answers, items, strict=True)]
        for it, a, h in zip(items, answers, hits, strict=True):
            keep("posttrain_qa", it["question"], a, it["answer"], h)
        res["qa_exact_match"] = round(sum(hits) / max(len(hits), 1), 4)
        res["qa_questions"] = len(items)
    for path in cfg.math:
        items = _rows(path, cfg.max_items)
        gold = [final_answer(str(it["answer"])) for it in items]
        answers = _answers(lm, [it["question"] for it in items], cfg, batch_size)
        hits = [math_reward(a, g) for a, g in zip(answers, gold, strict=True)]
        for it, a, g, h in zip(items, answers, gold, hits, strict=True):
            keep("posttrain_math", it["question"], a, g, h)
        res[f"math_accuracy_{Path(path).stem}"] = round(sum(hits) / max(len(hits), 1), 4)
    if cfg.pairs:
        items = _rows(cfg.pairs, cfg.max_items)
        prompts = [prompt_for(lm.tokenizer, it["question"]) for it in items]
        start = lm.tokenizer.convert_ids_to_tokens(lm.start_id)
        pm = preference_metrics(
            lm.model,
            lm.tokenizer,
            [start + p for p in prompts],
            [f" {it['chosen']}" if not lm.tokenizer.chat_template else it["chosen"] for it in items],
            [f" {it['rejected']}" if not lm.tokenizer.chat_template else it["rejected"] for it in items],
        )
        res.update(pm)
    res["response_chars_mean"] = round(sum(lengths) / max(len(lengths), 1), 2)
    return res, samples
