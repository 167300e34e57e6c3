"""Closed-book question answering: multiple choice by log-likelihood, and generation + exact match.

Closed-book means the model sees at most the article's *title* (the EntiGraph evaluation of QuALITY does
the same), never the article, so the score measures what the weights learned. ``QAConfig.template`` may
only use ``{title}`` and ``{question}``; loaders drop articles on read.

Two input formats:
- simple JSONL, one question per line: ``{id, title, question, choices, answer_index[, answer, entity]}``;
- QuALITY-style JSONL, one article per line: ``{article_id, title, article, questions: [{question,
  options, gold_label (1-based), question_unique_id}]}``. Questions without a gold label are counted and
  left out (QuALITY's test split has none).

Accuracy split by entity coverage: synthetic continued pretraining can only teach facts about entities its
synthetic documents mention, so :func:`coverage_split` reports accuracy separately on questions whose entity
(its ``entity``, else its ``title``) occurs in the synthetic corpus and on those whose entity does not: a gain
on the covered ones with none on the others is the signature of learning from the synthetic data.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lmpipe.evaluation.config import QAConfig
from lmpipe.evaluation.lm import LM, Span, generate, span_logprobs


@dataclass(slots=True)
class QAItem:
    id: str
    title: str
    question: str
    choices: list[str]
    answer_index: int
    entity: str = ""

    @property
    def answer(self) -> str:
        return self.choices[self.answer_index]


@dataclass
class QASet:
    items: list[QAItem]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count, never dropped silently


class QAFormatError(ValueError):
    pass


def _records(path: Path) -> list[tuple[int, dict]]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return list(enumerate(json.loads(text), 1))
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append((n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise QAFormatError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    return out


def _item(path: Path, n: int, rec: dict) -> QAItem:
    missing = [k for k in ("question", "choices") if k not in rec]
    if missing:
        raise QAFormatError(f"{path}:{n}: missing field(s) {missing}")
    choices = [str(c) for c in rec["choices"]]
    idx = rec.get("answer_index")
    if idx is None and "answer" in rec:
        idx = choices.index(rec["answer"]) if rec["answer"] in choices else None
    if not isinstance(idx, int) or not 0 <= idx < len(choices) or len(choices) < 2:
        raise QAFormatError(f"{path}:{n}: needs >= 2 choices and an answer_index into them; got {rec.get('answer_index')!r}")
    return QAItem(str(rec.get("id", n)), str(rec.get("title", "")), str(rec["question"]), choices, idx,
                  str(rec.get("entity", "")))


def _quality(path: Path, records: list[tuple[int, dict]]) -> QASet:
    items, skipped = [], {"no_gold_label": 0}
    for n, art in records:
        for k, q in enumerate(art.get("questions") or []):
            gold = q.get("gold_label")
            if gold is None:
                skipped["no_gold_label"] += 1
                continue
            options = [str(o) for o in q["options"]]
            if not 1 <= int(gold) <= len(options):
                raise QAFormatError(f"{path}:{n}: question {k}: gold_label {gold} outside 1..{len(options)}")
            qid = q.get("question_unique_id") or f"{art.get('article_id', n)}-{k}"
            # the article is deliberately not kept: closed-book
            items.append(QAItem(str(qid), str(art.get("title", "")), str(q["question"]), options, int(gold) - 1))
    return QASet(items, {k: v for k, v in skipped.items() if v})


def load_qa(path: str | Path, fmt: Literal["auto", "jsonl", "quality"] = "auto") -> QASet:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"QA file {path} not found (the demo stage writes data/eval/fiction_qa.jsonl)")
    records = _records(path)
    if fmt == "auto":
        fmt = "quality" if records and "questions" in records[0][1] else "jsonl"
    if fmt == "quality":
        return _quality(path, records)
    return QASet([_item(path, n, r) for n, r in records])


def prompt(item: QAItem, template: str) -> str:
    return template.format(title=item.title, question=item.question)


def choose(logliks: Sequence[float], lengths: Sequence[int]) -> int:
    """Index of the highest length-normalised log-likelihood (first one on ties)."""
    scores = [ll / max(n, 1) for ll, n in zip(logliks, lengths, strict=True)]
    return max(range(len(scores)), key=scores.__getitem__)


def multiple_choice(lm: LM, items: Sequence[QAItem], cfg: QAConfig, batch_tokens: int = 1024) -> tuple[dict, list[dict]]:
    """Score every ``" " + choice`` after the prompt; accuracy with the configured normalisation and raw."""
    contexts = lm.encode([prompt(it, cfg.template) for it in items])
    conts = [f" {c}" for it in items for c in it.choices]
    cont_ids = lm.encode(conts)
    spans, k = [], 0
    for it, ctx in zip(items, contexts, strict=True):
        for _ in it.choices:
            head = [lm.start_id, *ctx]
            spans.append(Span(head + cont_ids[k], len(head)))
            k += 1
    lps = span_logprobs(lm, spans, batch_tokens)
    correct = correct_raw = 0
    rows, k = [], 0
    for it in items:
        n = len(it.choices)
        ll = [float(lp.sum()) for lp in lps[k : k + n]]
        if cfg.normalise == "chars":
            lengths = [len(c) for c in conts[k : k + n]]
        elif cfg.normalise == "tokens":
            lengths = [len(c) for c in cont_ids[k : k + n]]
        else:
            lengths = [1] * n
        k += n
        pred, pred_raw = choose(ll, lengths), choose(ll, [1] * n)
        correct += pred == it.answer_index
        correct_raw += pred_raw == it.answer_index
        rows.append({"id": it.id, "pred": pred, "gold": it.answer_index, "logliks": [round(x, 4) for x in ll]})
    n = len(items)
    return {"mc_accuracy": correct / n, "mc_accuracy_unnormalised": correct_raw / n, "questions": n}, rows


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalise_answer(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def exact_match(lm: LM, items: Sequence[QAItem], cfg: QAConfig, batch_size: int = 16) -> tuple[dict, list[dict]]:
    """Greedy answer, cut at the first line break, compared after normalisation."""
    outs = generate(lm, [prompt(it, cfg.template) for it in items], cfg.max_new_tokens, batch_size)
    rows, hits = [], 0
    for it, (gen,) in zip(items, outs, strict=True):
        ans = first_line(gen)
        hit = normalise_answer(ans) == normalise_answer(it.answer)
        hits += hit
        rows.append({"id": it.id, "generated": ans, "answer": it.answer, "exact_match": hit})
    return {"exact_match": hits / len(items), "questions": len(items)}, rows


def entity_of(item: QAItem) -> str:
    return item.entity or item.title


def covered_entities(names: Iterable[str], texts: Iterable[str]) -> set[str]:
    """The names that occur in at least one text (case-insensitive, as whole words)."""
    by_lower = {n.lower(): n for n in names if n}
    if not by_lower:
        return set()
    alternatives = "|".join(re.escape(n) for n in sorted(by_lower, key=len, reverse=True))
    pattern = re.compile(rf"(?<!\w)({alternatives})(?!\w)", re.IGNORECASE)
    found: set[str] = set()
    for text in texts:
        found.update(by_lower[m.group(1).lower()] for m in pattern.finditer(text))
        if len(found) == len(by_lower):
            break
    return found


def coverage_split(items: Sequence[QAItem], rows: Sequence[dict], covered: set[str]) -> dict:
    """MC accuracy on the questions about covered entities and on the rest (``rows`` from :func:`multiple_choice`)."""
    out: dict = {"entities": len({entity_of(it) for it in items}),
                 "entities_covered": len({entity_of(it) for it in items} & covered)}
    for name, want in (("covered", True), ("not_covered", False)):
        hits = [r["pred"] == r["gold"] for it, r in zip(items, rows, strict=True) if (entity_of(it) in covered) == want]
        out[name] = {"mc_accuracy": sum(hits) / len(hits) if hits else None, "questions": len(hits)}
    return out
