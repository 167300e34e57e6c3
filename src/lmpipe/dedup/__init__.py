"""Exact and near-duplicate removal (normalised hashes; MinHash LSH + union-find), see ``pipeline``."""

from lmpipe.dedup.exact import exact_keys, normalize
from lmpipe.dedup.minhash import MinHasher, band_keys, candidate_probability, estimate_jaccard, shingle_hashes
from lmpipe.dedup.pipeline import dedup
from lmpipe.dedup.unionfind import UnionFind

__all__ = [
    "MinHasher", "UnionFind", "band_keys", "candidate_probability", "dedup", "estimate_jaccard",
    "exact_keys", "normalize", "shingle_hashes",
]
