"""Per-domain held-out loss, perplexity and bits per byte, streamed from a document dataset under a budget.

bits/byte = (sum of token NLL in nats) / (ln 2 * UTF-8 bytes of the texts): it does not depend on the
tokenizer, so models with different vocabularies compare. Whole documents are taken per domain until
``max_docs_per_domain`` or ``max_tokens_per_domain`` is reached, so tokens and bytes always describe the
same texts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from tqdm.auto import tqdm

from lmpipe.documents import MANIFEST, Document, iter_documents, read_manifest
from lmpipe.evaluation.config import HeldoutConfig
from lmpipe.evaluation.lm import LM, Span, span_logprobs, windows

ALL = "all"


@dataclass
class DomainTally:
    docs: int = 0
    tokens: int = 0
    bytes: int = 0
    nll: float = 0.0  # nats

    def add(self, other: DomainTally) -> None:
        self.docs += other.docs
        self.tokens += other.tokens
        self.bytes += other.bytes
        self.nll += other.nll

    def metrics(self) -> dict[str, float | int]:
        loss = self.nll / self.tokens
        return {
            "docs": self.docs,
            "tokens": self.tokens,
            "bytes": self.bytes,
            "loss": loss,
            "perplexity": math.exp(loss),
            "bits_per_byte": self.nll / (math.log(2) * self.bytes),
        }


def _chunks(items: Iterable[Document], n: int) -> Iterator[list[Document]]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


def heldout_metrics(
    lm: LM, docs: Iterable[Document], cfg: HeldoutConfig, batch_tokens: int = 1024, read_chunk: int = 64,
    context: Callable[[Document], str] | None = None,
) -> dict[str, dict[str, float | int]]:
    """``{domain: {docs, tokens, bytes, loss, perplexity, bits_per_byte}}`` plus ``"all"`` (token-weighted).

    ``context`` (e.g. MeCo's metadata prefix): text each document's first window is conditioned on; only the
    document's own tokens are scored, so the metrics compare with and without it."""
    seq_len = min(cfg.seq_len or lm.max_len, lm.max_len)
    tally: dict[str, DomainTally] = {}
    bar = tqdm(desc=f"heldout {lm.name}", unit="tok", dynamic_ncols=True, mininterval=1.0)

    def full(d: str) -> bool:
        t = tally.get(d)
        return t is not None and (t.docs >= cfg.max_docs_per_domain or t.tokens >= cfg.max_tokens_per_domain)

    for chunk in _chunks(docs, read_chunk):
        chosen = [d for d in chunk if not full(d.domain)]
        spans: list[Span] = []
        owner: list[str] = []
        for doc, ids in zip(chosen, lm.encode([d.text for d in chosen]), strict=True):
            if not ids or full(doc.domain):  # budget is re-checked per document as this chunk fills it
                continue
            t = tally.setdefault(doc.domain, DomainTally())
            t.docs += 1
            t.tokens += len(ids)
            t.bytes += len(doc.text.encode("utf-8"))
            head = lm.encode([context(doc)])[0] if context is not None else []
            # windows shortened by the context's length, so the first one still fits it whole
            doc_spans = windows(ids, lm.start_id, max(2, seq_len - len(head)))
            if head:
                doc_spans[0] = Span([lm.start_id, *head, *doc_spans[0].ids[1:]], 1 + len(head))
            for s in doc_spans:
                spans.append(s)
                owner.append(doc.domain)
        if spans:
            for domain, lp in zip(owner, span_logprobs(lm, spans, batch_tokens, bar.update), strict=True):
                tally[domain].nll -= float(lp.sum())
    bar.close()
    if not tally:
        raise ValueError("held-out dataset has no scorable documents")
    total = DomainTally()
    for t in tally.values():
        total.add(t)
    out = {d: tally[d].metrics() for d in sorted(tally)}
    out[ALL] = total.metrics()
    return out


def has_documents(directory: str | Path | None) -> bool:
    """A document dataset that exists and holds at least one document."""
    if directory is None or not (Path(directory) / MANIFEST).is_file():
        return False
    return read_manifest(directory).get("docs", 0) > 0


def subset_metrics(
    lm: LM, subsets: dict[str, str | Path | None], cfg: HeldoutConfig, batch_tokens: int = 1024
) -> dict[str, dict[str, dict[str, float | int]]]:
    """``heldout_metrics`` of each named dataset (e.g. the pre-filter sample ``raw`` and its ``clean`` part);
    an absent or empty one is left out (a filter that keeps nothing of a sample leaves no clean part)."""
    return {name: heldout_metrics(lm, iter_documents(d), cfg, batch_tokens)
            for name, d in subsets.items() if has_documents(d)}
