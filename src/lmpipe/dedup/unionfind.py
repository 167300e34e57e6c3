"""Union-find over document indices, vectorised with numpy.

Invariant: ``parent[i] <= i``. A union hooks the larger root under the smaller one, so every component's
root is its smallest index: the result is independent of the order in which edges arrive, which keeps
dedup deterministic however shards were scheduled. Memory: one int64 per document.
"""

from __future__ import annotations

import numpy as np


class UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def _compress(self) -> None:
        p = self.parent
        while True:  # pointer jumping: O(log depth) vectorised passes
            pp = p[p]
            if np.array_equal(pp, p):
                break
            p = pp
        self.parent = p

    def find(self, x: np.ndarray | int) -> np.ndarray:
        self._compress()
        return self.parent[x]

    def union(self, a: np.ndarray, b: np.ndarray) -> None:
        """Merge the components of every pair ``(a[i], b[i])``."""
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        while len(a):
            ra, rb = self.find(a), self.find(b)
            differ = ra != rb
            a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
            if not len(a):
                break
            # several edges may hook the same root: minimum.at keeps the smallest, later rounds add the rest
            np.minimum.at(self.parent, np.maximum(ra, rb), np.minimum(ra, rb))

    def roots(self) -> np.ndarray:
        """Each index's component root (its smallest member)."""
        self._compress()
        return self.parent
