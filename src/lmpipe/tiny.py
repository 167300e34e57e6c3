"""Tiny randomly initialised Llama models + byte-level BPE tokenizers, saved as ordinary HF model directories.

For tests, benchmarks and smoke runs: they load through exactly the code paths a real checkpoint takes
(``AutoModelForCausalLM``, ``EmbeddedBackend``, ``serve-llm``, evaluation), in well under a second.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

EOT = "<|endoftext|>"
CHAT_SPECIALS = ["<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DEFAULT_TEXTS = [
    "The observatory was founded in 1851 by a guild of clockmakers in the old harbour town.",
    "Entities, relations and summaries: people, places, organisations, dates and objects.",
    '{"entities": ["a", "b"], "summary": "one sentence."} Think step by step. 1. 2. 3.',
] * 20


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512, chat: bool = False):
    """A byte-level BPE tokenizer (HF ``tokenizers``) wrapped as a ``PreTrainedTokenizerFast``.

    ``chat=True`` adds ChatML markers and template (eos = ``<|im_end|>``); otherwise ``<|endoftext|>`` is
    bos, eos and pad.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOT, *(CHAT_SPECIALS if chat else [])],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    if not chat:
        return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, pad_token=EOT)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token=EOT)
    fast.chat_template = CHATML
    return fast


def build_tiny_model(
    directory: str | Path,
    texts: Iterable[str] | None = None,
    vocab_size: int = 512,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int | None = None,
    context: int = 256,
    seed: int = 0,
    chat: bool = False,
    init_std: float = 0.02,
    tie_embeddings: bool = False,
) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = train_tokenizer(DEFAULT_TEXTS if texts is None else texts, vocab_size, chat)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads or heads, max_position_embeddings=context,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=tie_embeddings, initializer_range=init_std,
    )
    out = Path(directory)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out
