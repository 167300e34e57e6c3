"""Preference pairs for DPO: on-policy (sampled from the SFT model, ranked by the verifiable reward) or off-policy.

On-policy, as in TÜLU 3: k samples per prompt from the policy about to be trained; the best and the worst by reward
form a pair when their rewards differ. When they do not (all right or all wrong), the pair falls back to
off-policy: the gold answer against a sample that got it wrong, or (all right) against a corrupted gold answer.
Every pair records its origin, and the counts go to the metrics.

Also here: sequence log-probabilities of completions given prompts, computed with a plain forward pass (used for
held-out preference accuracy and margins, independently of TRL's own bookkeeping).
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from lmpipe.posttrain.chat import encode, render
from lmpipe.posttrain.data import Pair, Prompt
from lmpipe.posttrain.rewards import reward


def gold_text(p: Prompt) -> str:
    return f"#### {p.answer}" if p.kind == "math" else p.answer


def corrupt(p: Prompt, others: list[Prompt], rng: random.Random) -> str:
    """A plausible wrong answer: a nearby number, another prompt's answer of the same kind, or the wrong case."""
    if p.kind == "math":
        try:
            return f"#### {int(float(p.answer.replace(',', ''))) + rng.choice([-3, -2, -1, 1, 2, 3])}"
        except ValueError:
            return f"#### {p.answer}0"
    if p.kind == "format":
        return p.answer.lower() if p.answer != p.answer.lower() else p.answer.upper() + "!"
    pool = [o.answer for o in others if o.kind == p.kind and o.answer != p.answer]
    return rng.choice(pool) if pool else p.answer[::-1]


def prompt_text(tok: Any, prompt: list[dict]) -> str:
    return render(tok, prompt, generation_prompt=True)


def off_policy_pairs(prompts: list[Prompt], seed: int) -> tuple[list[Pair], Counter[str]]:
    rng = random.Random(seed)
    pairs = [Pair(p.id, p.source, p.prompt, gold_text(p), corrupt(p, prompts, rng)) for p in prompts]
    return pairs, Counter(off_policy=len(pairs))


def on_policy_pairs(
    model: Any,
    tok: Any,
    prompts: list[Prompt],
    k: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 16,
) -> tuple[list[Pair], Counter[str], dict[str, float]]:
    """Pairs from k samples per prompt; returns (pairs, origin counts, sample reward stats)."""
    from lmpipe.evaluation.lm import LM, generate

    lm = LM.wrap(model, tok, "policy")
    bos = tok.bos_token or ""
    texts = [prompt_text(tok, p.prompt).removeprefix(bos) for p in prompts]  # generate() adds the BOS itself
    samples = generate(
        lm, texts, max_new_tokens, batch_size, num_samples=k, temperature=temperature, sample=True, seed=seed
    )
    rng = random.Random(seed)
    pairs, origin, scores = [], Counter(), []
    for p, outs in zip(prompts, samples, strict=True):
        outs = [o.strip() for o in outs]
        r = [reward(p.kind, o, p.answer) for o in outs]
        scores += r
        best, worst = max(range(k), key=r.__getitem__), min(range(k), key=r.__getitem__)
        if r[best] > r[worst] and outs[best] and outs[worst]:
            pairs.append(Pair(p.id, p.source, p.prompt, outs[best], outs[worst]))
            origin["on_policy"] += 1
        elif r[best] == 0 and outs[worst]:  # all wrong: gold vs a sample
            pairs.append(Pair(p.id, p.source, p.prompt, gold_text(p), outs[worst]))
            origin["gold_vs_sample"] += 1
        else:  # all right (or empty samples): gold vs a corrupted gold
            pairs.append(Pair(p.id, p.source, p.prompt, gold_text(p), corrupt(p, prompts, rng)))
            origin["off_policy"] += 1
    return (
        pairs,
        origin,
        {"sample_reward_mean": round(sum(scores) / max(len(scores), 1), 4), "samples": len(scores)},
    )


def sequence_logps(
    model: Any, tok: Any, prompts: list[str], completions: list[str], batch_size: int = 16
) -> list[tuple[float, int]]:
    """(sum of log-probs, token count) of each completion + EOS after its prompt (as TRL tokenizes a pair)."""
    import torch

    eos = tok.eos_token or ""
    rows = [
        (encode(tok, p), encode(tok, c if c.endswith(eos) else c + eos))
        for p, c in zip(prompts, completions, strict=True)
    ]
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[tuple[float, int]] = []
    model.eval()
    for b in range(0, len(rows), batch_size):
        chunk = rows[b : b + batch_size]
        width = max(len(p) + len(c) for p, c in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (p, c) in enumerate(chunk):
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        for i, (p, c) in enumerate(chunk):
            pos = torch.arange(len(p) - 1, len(p) + len(c) - 1)
            out.append((float(logp[i, pos, ids[i, pos + 1]].sum()), len(c)))
    return out


def preference_metrics(
    model: Any,
    tok: Any,
    prompts: list[str],
    chosen: list[str],
    rejected: list[str],
    ref: list[tuple[float, float]] | None = None,
    beta: float = 0.1,
) -> dict[str, float]:
    """Held-out preference accuracy and margin of completions after (already formatted) prompts.

    Policy-only: accuracy = share of pairs with log π(chosen) > log π(rejected) per token (so length does not
    decide), margin = mean per-token log-prob difference. With ``ref`` (reference log-probs per pair): DPO's
    implicit reward margin β[(log π_c − log ref_c) − (log π_r − log ref_r)] and its accuracy.
    """
    c = sequence_logps(model, tok, prompts, chosen)
    r = sequence_logps(model, tok, prompts, rejected)
    n = max(len(prompts), 1)
    diffs = [cl / cn - rl / rn for (cl, cn), (rl, rn) in zip(c, r, strict=True)]
    out = {
        "pairs": len(prompts),
        "pref_accuracy": round(sum(d > 0 for d in diffs) / n, 4),
        "pref_margin": round(sum(diffs) / n, 4),
    }
    if ref is not None:
        rewards = [
            beta * ((cl - rc) - (rl - rr)) for (cl, _), (rl, _), (rc, rr) in zip(c, r, ref, strict=True)
        ]
        out["reward_margin"] = round(sum(rewards) / n, 4)
        out["reward_accuracy"] = round(sum(x > 0 for x in rewards) / n, 4)
    return out
