"""Config of stage ``dedup`` (section ``dedup``): normalisation, MinHash LSH and its verification."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from lmpipe.sections import Section


class NormalizeConfig(Section):
    """How text is normalised before exact hashing and shingling (steps in ``lmpipe.dedup.exact``)."""

    unicode_nfkc: bool = True
    lowercase: bool = True
    strip_punctuation: bool = Field(True, description="punctuation/symbols become spaces")
    strip_digits: bool = Field(False, description="off: problems differing only in numbers are distinct")


class DedupConfig(Section):
    """Exact (normalised hash) + near (MinHash LSH) dedup; one document kept per duplicate cluster."""

    normalize: NormalizeConfig = NormalizeConfig()
    exact: bool = True
    near: bool = True
    shingle_size: int = Field(5, ge=1, le=32, description="words per shingle")
    bands: int = Field(14, ge=1, le=512)
    rows: int = Field(8, ge=1, le=64, description="signature values per band; num_perm = bands * rows")
    seed: int = Field(1, ge=0, description="draws the MinHash permutations")
    verify: Literal["none", "signature", "exact"] = Field(
        "signature", description="check LSH candidates: estimated (signature) or exact shingle Jaccard"
    )
    threshold: float = Field(0.7, ge=0.0, le=1.0, description="minimum Jaccard of a verified candidate pair")
    keep: Literal["first", "longest"] = Field("first", description="survivor of a cluster (ties: first)")
    batch_docs: int = Field(1000, ge=1, description="documents hashed per vectorised batch")
    chunk_shingles: int = Field(4096, ge=64, description="shingles per permutation block (fits in cache)")
    bucket_mib: int = Field(256, ge=1, description="memory for one band's buckets in the cluster pass")
    docs_per_shard: int = Field(5000, ge=1)

    @property
    def num_perm(self) -> int:
        return self.bands * self.rows
