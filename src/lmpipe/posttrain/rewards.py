"""Verifiable rewards: math answers by ``math-verify`` equivalence, fictional QA and format tasks by exact match.

A completion's final answer is the text after its last ``####`` (the demo's GSM8K-style marker) if it has one,
else the whole first line; ``math-verify`` then compares it with the gold answer symbolically (``0.5`` = ``1/2``,
``1,000`` = ``1000``, LaTeX or plain). QA answers compare after SQuAD normalisation (case, punctuation, articles);
format tasks ("write X in capital letters") compare exactly, since case is the point.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmpipe.evaluation.qa import first_line, normalise_answer


def final_answer(completion: str) -> str:
    text = completion.rsplit("####", 1)[1] if "####" in completion else completion
    return first_line(text)


def math_reward(completion: str, answer: str) -> float:
    from math_verify import parse, verify

    pred = final_answer(completion)
    if not pred:
        return 0.0
    gold = parse(answer)
    return 1.0 if gold and verify(gold, parse(pred)) else 0.0


def qa_reward(completion: str, answer: str) -> float:
    return 1.0 if normalise_answer(final_answer(completion)) == normalise_answer(answer) else 0.0


def format_reward(completion: str, answer: str) -> float:
    return 1.0 if first_line(completion) == answer.strip() else 0.0


REWARDS: dict[str, Callable[[str, str], float]] = {
    "math": math_reward,
    "qa": qa_reward,
    "format": format_reward,
}


def reward(kind: str, completion: str, answer: str) -> float:
    fn = REWARDS.get(kind)
    if fn is None:
        raise ValueError(f"no verifiable reward for prompt kind {kind!r} (known: {sorted(REWARDS)})")
    return fn(completion, answer)


def _text(completion: Any) -> str:
    # TRL passes strings for text prompts and message lists for conversational ones
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def verifiable_reward(
    prompts: list, completions: list, answer: list[str], kind: list[str], **_: Any
) -> list[float]:
    """GRPOTrainer reward function: the dataset's ``answer`` and ``kind`` columns arrive as keyword lists."""
    return [reward(k, _text(c), a) for c, a, k in zip(completions, answer, kind, strict=True)]
