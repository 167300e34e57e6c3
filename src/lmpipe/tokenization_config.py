"""Config of stage ``tokenize`` (section ``tokenize``: :mod:`lmpipe.tokenization`, :mod:`lmpipe.tokenizer`).

``lmpipe.config`` imports every section, so this file is in every stage's code deps and in every import of
``lmpipe.config``: it lives apart from ``tokenization.py`` so that neither carries that module's code and
imports.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from lmpipe.sections import Section


class TokenizeConfig(Section):
    """Byte-level BPE training (or a reused local HF tokenizer) and packing into per-domain token files."""

    tokenizer_path: str | None = Field(
        None, description="reuse this local HF tokenizer dir instead of training"
    )
    vocab_size: int = Field(8192, ge=300, le=1 << 20, description="target vocab (incl. special tokens)")
    min_frequency: int = Field(2, ge=1, description="BPE merges need a pair seen at least this often")
    train_max_mib: float = Field(
        256, gt=0, description="train the tokenizer on a deterministic id-hash sample of about this much text"
    )
    eos_token: str = Field("<|endoftext|>", min_length=1, description="appended after every document")
    pad_token: str | None = "<|pad|>"
    extra_special_tokens: list[str] = Field(default_factory=list)
    val_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="held-out share, by a hash of the doc id")
    batch_docs: int = Field(512, ge=1, description="documents per encode_batch call")
    encode_threads: int = Field(
        1,
        ge=0,
        description="threads inside each encode_batch (0 = all cores); processes come from run.executor",
    )
    heldout_docs_per_shard: int = Field(5000, ge=1)

    @model_validator(mode="after")
    def _specials(self) -> TokenizeConfig:
        specials = [self.eos_token, *([self.pad_token] if self.pad_token else []), *self.extra_special_tokens]
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens must be distinct; got {specials}")
        return self
