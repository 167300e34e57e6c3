"""Config of stage ``ingest`` (section ``ingest``: :mod:`lmpipe.ingest`, :mod:`lmpipe.sources`): the sources and
the checks on every record.

``lmpipe.config`` imports every section, so this file is in every stage's code deps and in every import of
``lmpipe.config``: it lives apart from ``ingest.py`` so that neither carries that module's code and imports.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lmpipe.holdout.config import HoldoutConfig
from lmpipe.sections import Section
from lmpipe.web.config import WebConfig

TextSplit = Literal["file", "paragraph", "line", "heading"]


Format = Literal["auto", "txt", "jsonl", "parquet", "hf_disk", "hf_hub", "warc", "wet", "html"]


class SourceConfig(Section):
    """One input: local path/glob, ``s3://bucket/prefix/*.jsonl``, or a Hugging Face dataset."""

    uri: str = Field(..., min_length=1)
    domain: str = Field(..., pattern=r"^[a-z][a-z0-9_]*$")
    format: Format = "auto"
    text_field: str = "text"
    split: TextSplit = Field("file", description="how a .txt file becomes documents")
    hf_split: str = "train"
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto, Ceph)")


# a charset-normalizer guess is kept only at confidence = 1 - chaos >= this; the detector itself drops
# candidates above chaos 0.2 (its default), so 0.8 accepts any guess it offers (see lmpipe.decoding)
MIN_ENCODING_CONFIDENCE = 0.8


class IngestConfig(Section):
    sources: list[SourceConfig] = Field(default_factory=list, min_length=1)
    docs_per_shard: int = Field(5000, ge=1)
    group_mib: int = Field(64, ge=1, description="small input files are read together up to this size")
    min_chars: int = Field(1, ge=0, description="shorter documents are quarantined as 'empty'")
    max_chars: int = Field(1_000_000, ge=1, description="longer documents are quarantined as 'oversize'")
    surrogates: Literal["replace", "quarantine"] = Field(
        "replace",
        description="JSON strings escaping half a UTF-16 pair ('\\ud800'): U+FFFD, or 'lone_surrogate'",
    )
    min_encoding_confidence: float = Field(
        MIN_ENCODING_CONFIDENCE,
        ge=0.0,
        le=1.0,
        description="a detected (non-UTF-8, no BOM) encoding below this is 'undecodable'",
    )
    web: WebConfig = WebConfig()
    holdout: HoldoutConfig = HoldoutConfig()

    @model_validator(mode="after")
    def _bounds(self) -> IngestConfig:
        if self.min_chars >= self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must be below max_chars ({self.max_chars})")
        return self
