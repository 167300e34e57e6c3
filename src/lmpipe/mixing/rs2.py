"""RS2 without replacement (Okanovic et al., 2023), the baseline every online data-selection method is held against.

Every window of the weighted domains is pooled (the weights only choose which domains), and the pool is visited
in a fresh seeded random order each epoch: a random subset of the pool per round, without replacement until
the pool is used up. Counter-based like :class:`lmpipe.mixture.MixtureSampler`: the position is one number.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np

from lmpipe.mixture import STATE_VERSION, RankStrided, TokenIndex


class RS2Sampler(RankStrided):
    """RS2 without replacement (Okanovic et al. 2023), the baseline for online data selection: the windows of
    every weighted domain pooled (weights only choose the domains), visited in a fresh seeded random order each
    epoch, so no window repeats before all were seen. Same interface and resume contract as ``MixtureSampler``."""

    def __init__(
        self,
        index: TokenIndex,
        weights: Mapping[str, float],
        seq_len: int,
        seed: int,
        split: str = "train",
        *,
        missing: Literal["error", "ignore"] = "error",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self._place(index, weights, seq_len, seed, split, missing, rank, world_size)
        self.domains = [d for d, w in self.weights.items() if w > 0]
        self.streams = {d: index.stream(d, split) for d in self.domains}
        self.windows = {d: max(0, (len(s) - 1) // seq_len) for d, s in self.streams.items()}
        self.offsets = np.concatenate(
            [[0], np.cumsum([self.windows[d] for d in self.domains], dtype=np.int64)]
        )
        if self.offsets[-1] == 0:
            raise ValueError(f"no window of {seq_len + 1} tokens in domains {self.domains}")
        self.step = 0
        self._perm: tuple[int, np.ndarray] | None = None

    def _advance(self) -> tuple[str, int]:
        epoch, pos = divmod(self.step, int(self.offsets[-1]))
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (
                epoch,
                np.random.default_rng([self.seed, 3, epoch]).permutation(int(self.offsets[-1])),
            )
        g = int(self._perm[1][pos])
        i = int(np.searchsorted(self.offsets, g, side="right")) - 1
        self.step += 1
        return self.domains[i], g - int(self.offsets[i])

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "kind": "rs2",
            "step": self.step,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "split": self.split,
            "domains": list(self.domains),
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        mine = self.state_dict()
        diffs = {
            k: (state.get(k), mine[k])
            for k in ("version", "kind", "seed", "seq_len", "split", "domains", "world_size")
            if state.get(k) != mine[k]
        }
        if diffs:
            raise ValueError(f"RS2 sampler state does not match this sampler: {diffs}")
        self.step, self._perm = int(state["step"]), None

    def epochs_consumed(self) -> dict[str, float]:
        """Passes over the pooled windows, the same for every pooled domain (RS2 visits them evenly)."""
        full, rest = divmod(self.step, int(self.offsets[-1]))
        seen = np.zeros(len(self.domains))
        if rest:
            perm = np.random.default_rng([self.seed, 3, full]).permutation(int(self.offsets[-1]))[:rest]
            seen = np.bincount(
                np.searchsorted(self.offsets, perm, side="right") - 1, minlength=len(self.domains)
            )
        return {
            d: full + float(seen[i]) / self.windows[d] if self.windows[d] else 0.0
            for i, d in enumerate(self.domains)
        }
