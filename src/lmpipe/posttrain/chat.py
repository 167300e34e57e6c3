"""Chat formatting: give a tokenizer a chat template when it has none, and tokenize chats with assistant masks.

Our BPE tokenizer has no chat template; it gets ChatML and its two special tokens (the model's embeddings grow to
match, new rows at the mean embedding). A tokenizer with a template of its own (SmolLM2-Instruct) keeps it.

Assistant masks come from rendering growing prefixes of the chat (``messages[:i]`` with the generation prompt vs
``messages[:i+1]``) rather than from ``{% generation %}`` markers, so they work with any prefix-preserving template,
including ones TRL has no training variant for; the template is checked to be prefix-preserving on every chat.
"""

from __future__ import annotations

from typing import Any

from lmpipe.posttrain.data import Message

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}{{ m['content'] + '<|im_end|>\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class TemplateError(ValueError):
    pass


def ensure_chat_template(tok: Any, model: Any | None = None, template: str = "chatml") -> bool:
    """Add ChatML (tokens + template) to ``tok`` if it has no template; resize ``model`` to match. True if added."""
    if tok.chat_template:
        return False
    if template != "chatml":
        raise ValueError(f"unknown chat template {template!r}")
    tok.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    tok.chat_template = CHATML
    tok.eos_token = (
        IM_END  # a reply ends at <|im_end|>: generation stops there and TRL appends it to completions
    )
    if tok.pad_token is None:
        tok.pad_token = IM_END
    if model is not None:
        old = model.get_input_embeddings().weight.shape[0]
        if len(tok) > old:
            _grow_embeddings(model, len(tok))
        model.config.eos_token_id = tok.eos_token_id
        model.config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
    return True


def _grow_embeddings(model: Any, size: int) -> None:
    """New token rows at the mean of the old ones: deterministic (HF's mean resizing samples), so reruns match."""
    import torch

    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        for emb in {
            id(e): e for e in (model.get_input_embeddings(), model.get_output_embeddings()) if e is not None
        }.values():
            emb.weight[old:] = emb.weight[:old].mean(0, keepdim=True)


def render(tok: Any, messages: list[Message], generation_prompt: bool = False) -> str:
    """The chat as text, starting with the tokenizer's BOS (our pretrained models always saw one first)."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    bos = tok.bos_token or ""
    return text if text.startswith(bos) else bos + text


def encode(tok: Any, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def tokenize_chat(tok: Any, messages: list[Message]) -> tuple[list[int], list[int]]:
    """``input_ids`` and ``assistant_masks`` (1 on every assistant token, its end-of-turn token included)."""
    ids: list[int] = []
    mask: list[int] = []
    for i, m in enumerate(messages):
        full = encode(tok, render(tok, messages[: i + 1]))
        if m["role"] == "assistant":
            head = encode(tok, render(tok, messages[:i], generation_prompt=True))
            if full[: len(head)] != head or head[: len(ids)] != ids:
                raise TemplateError("chat template is not prefix-preserving: cannot mask assistant turns")
            mask += [0] * (len(head) - len(ids))
            ids = head
            # the reply up to and including the end-of-turn token is trained; the template's separator after it not
            reply = full[len(head) :]
            eos = tok.eos_token_id
            cut = reply.index(eos) + 1 if eos in reply else len(reply)
            mask += [1] * cut + [0] * (len(reply) - cut)
        else:
            if full[: len(ids)] != ids:
                raise TemplateError("chat template is not prefix-preserving: cannot mask assistant turns")
            mask += [0] * (len(full) - len(ids))
        ids = full
    return ids, mask
