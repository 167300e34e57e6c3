"""A loaded causal LM and the two primitives every metric is built on: batched log-likelihood of target
spans, and batched generation.

Every scored sequence starts with a *start token* (BOS, else EOS as GPT-2 style document separator), so the
first text token is predicted too and per-byte metrics cover every byte of a text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LOG_TOO_LONG = "sequence longer than the model's context"


class ModelDirError(FileNotFoundError):
    """A model directory to evaluate is missing or is not a Hugging Face causal-LM directory."""


@dataclass(slots=True)
class Span:
    """``ids`` is context + targets; tokens ``ids[start:]`` are scored, each given everything before it."""

    ids: list[int]
    start: int


@dataclass
class LM:
    name: str
    model: Any  # transformers PreTrainedModel
    tokenizer: Any  # transformers PreTrainedTokenizerBase
    max_len: int
    start_id: int
    pad_id: int
    prompt_prefix: tuple[int, ...] = ()  # ids after the start token of every generation prompt (PHF: <|good|>)

    @classmethod
    def load(cls, path: str | Path, name: str | None = None, seq_len: int | None = None) -> LM:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelDirError(
                f"model directory {path} is missing or has no config.json: run the stage that produces it, "
                "or remove it from evaluate.models in params.yaml"
            )
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        model.eval()
        return cls.wrap(model, tok, name or path.name, seq_len)

    @classmethod
    def wrap(cls, model: Any, tokenizer: Any, name: str = "model", seq_len: int | None = None) -> LM:
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise ValueError(f"{name}: tokenizer has neither a BOS nor an EOS token, so the first token of a text "
                             "cannot be scored; add one when training the tokenizer")
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start
        ctx = getattr(model.config, "max_position_embeddings", None) or 1024
        return cls(name, model, tokenizer, min(seq_len or ctx, ctx), int(start), int(pad))

    @property
    def eos_id(self) -> int | None:
        return self.tokenizer.eos_token_id

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        return self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def windows(ids: list[int], start_id: int, max_len: int) -> list[Span]:
    """Cut a long token sequence into non-overlapping windows that together score every token once.

    Each window is conditioned on the last token of the previous one (the start token for the first), so
    the context resets at window boundaries: the usual trade-off of cheap non-overlapping evaluation.
    """
    step = max_len - 1
    spans, prev = [], start_id
    for a in range(0, len(ids), step):
        chunk = ids[a : a + step]
        spans.append(Span([prev, *chunk], 1))
        prev = chunk[-1]
    return spans


def fit(span: Span, max_len: int) -> Span:
    """Drop context from the left so a span fits the model; the targets must fit on their own."""
    cut = len(span.ids) - max_len
    if cut <= 0:
        return span
    if cut >= span.start:
        raise ValueError(f"{LOG_TOO_LONG}: {len(span.ids) - span.start} target tokens > {max_len - 1}")
    return Span(span.ids[cut:], span.start - cut)


def _split_head(model: Any) -> tuple[Any, Any] | None:
    """(decoder body, output head) where logits are a plain linear map of the last hidden state."""
    cfg = model.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None):
        return None
    try:
        body, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return (body, head) if body is not None and isinstance(head, torch.nn.Linear) else None


def _target_logprobs(
    model: Any, ids: torch.Tensor, mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, chunk: int = 1024
) -> torch.Tensor:
    """log p(ids[r, c+1] | ids[r, :c+1]) for each (r, c).

    Projecting only the needed hidden states onto the vocabulary (in chunks) saves the full
    batch x length x vocab logits tensor, which dominates time and memory for small models.
    """
    targets = ids[rows, cols + 1]
    split = _split_head(model)
    if split is None:
        logits = model(input_ids=ids, attention_mask=mask).logits[rows, cols]
        return torch.log_softmax(logits.float(), -1).gather(-1, targets[:, None]).squeeze(-1)
    body, head = split
    hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state[rows, cols]
    parts = []
    for a in range(0, len(rows), chunk):
        logits = head(hidden[a : a + chunk]).float()
        parts.append(logits.gather(-1, targets[a : a + chunk, None]).squeeze(-1) - torch.logsumexp(logits, -1))
    return torch.cat(parts)


def _token_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted longest first, cut so each padded batch (rows x longest) stays within the budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


@torch.inference_mode()
def span_logprobs(
    lm: LM, spans: Sequence[Span], batch_tokens: int = 1024, on_batch: Callable[[int], None] | None = None
) -> list[torch.Tensor]:
    """Log-probabilities (natural log, float64) of each span's target tokens, in input order.

    Spans are sorted by length and batched under a padded-token budget: similar lengths waste little
    padding, and a token (not row) budget keeps attention and activations cache-sized for long windows
    while still batching many short QA spans. Padding sits on the right, where a causal model cannot see it.
    """
    spans = [fit(s, lm.max_len) for s in spans]
    out: list[torch.Tensor | None] = [None] * len(spans)
    for idx in _token_batches([len(s.ids) for s in spans], batch_tokens):
        width = len(spans[idx[0]].ids)
        ids = torch.full((len(idx), width), lm.pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = len(spans[i].ids)
            ids[row, :n] = torch.tensor(spans[i].ids)
            mask[row, :n] = 1
        # positions whose next token is a target: logits are needed there only
        rows = torch.cat([torch.full((len(spans[i].ids) - spans[i].start,), r) for r, i in enumerate(idx)])
        cols = torch.cat([torch.arange(spans[i].start - 1, len(spans[i].ids) - 1) for i in idx])
        logp = _target_logprobs(lm.model, ids, mask, rows, cols)
        k = 0
        for i in idx:
            n = len(spans[i].ids) - spans[i].start
            out[i] = logp[k : k + n].double()
            k += n
        if on_batch:
            on_batch(int(mask.sum()))
    return out  # type: ignore[return-value]


@torch.inference_mode()
def generate(
    lm: LM,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_p: float = 1.0,
    sample: bool = False,
    seed: int = 0,
) -> list[list[str]]:
    """``num_samples`` continuations per prompt (greedy unless ``sample``); only the new text is returned."""
    encoded = [[lm.start_id, *lm.prompt_prefix, *ids] for ids in lm.encode(prompts)]
    keep = max(1, lm.max_len - max_new_tokens)
    encoded = [e[-keep:] for e in encoded]
    results: list[list[str]] = []
    for b in range(0, len(encoded), batch_size):
        chunk = encoded[b : b + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), lm.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, e in enumerate(chunk):  # left padding: every prompt ends where generation starts
            ids[row, width - len(e) :] = torch.tensor(e)
            mask[row, width - len(e) :] = 1
        torch.manual_seed(seed + b)
        kwargs: dict[str, Any] = {"do_sample": sample}
        if sample:
            kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
        out = lm.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_samples,
            pad_token_id=lm.pad_id,
            eos_token_id=lm.eos_id,
            **kwargs,
        )
        texts = [lm.decode(_until_eos(row.tolist(), lm.eos_id)) for row in out[:, width:]]
        results.extend(texts[i : i + num_samples] for i in range(0, len(texts), num_samples))
    return results


def _until_eos(ids: list[int], eos: int | None) -> list[int]:
    return ids[: ids.index(eos)] if eos is not None and eos in ids else ids
