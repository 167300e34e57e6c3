"""Stage ``dedup``: exact and near-duplicate removal (normalised hashes; MinHash LSH + union-find).

The three passes (sign, cluster, write) are in ``passes``; ``run`` is the stage entry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmpipe.dedup.exact import exact_keys, normalize
from lmpipe.dedup.minhash import MinHasher, band_keys, candidate_probability, estimate_jaccard, shingle_hashes
from lmpipe.dedup.passes import dedup, label_outcomes, plot_cluster_sizes
from lmpipe.dedup.unionfind import UnionFind

if TYPE_CHECKING:
    from lmpipe.config import Params
    from lmpipe.contract import StageIO
    from lmpipe.executors import Executor

__all__ = [
    "MinHasher", "UnionFind", "band_keys", "candidate_probability", "dedup", "estimate_jaccard",
    "exact_keys", "normalize", "run", "shingle_hashes",
]


def run(p: Params, io: StageIO, ex: Executor) -> dict[str, Any]:
    """Deduplicate ``io.docs`` into ``io.out`` (one document per cluster) and ``io.rejected`` (the others)."""
    stats = dedup(p.dedup, io.docs, io.out, io.rejected, ex)
    stats["planted_noise"] = label_outcomes(io.out, io.rejected)  # the demo's labelled noise: what became of it
    stats["plot"] = str(plot_cluster_sizes(stats["cluster_sizes"], io.plots / "cluster_sizes.png"))
    return stats
