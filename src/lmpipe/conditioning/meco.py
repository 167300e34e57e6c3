"""MeCo (Gao et al. 2025, "Metadata Conditioning Accelerates Language Model Pre-training"): each document is
preceded by its metadata (``URL: host``) for the first ``fraction`` of training tokens, then a cooldown
trains on plain documents.

``tokenize`` packs both variants: split ``train`` (plain) and ``train_meco`` (the same document tokens, the
prefix ids inserted before each). :class:`CooldownSampler` takes global windows ``[0, boundary)`` from the
prefixed stream and every later window from the plain one, so the prefix disappears exactly at training
token ``boundary * seq_len``; the switch is a pure function of the window counter, which is in the sampler
state, so a resumed run crosses the boundary at the same token.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from lmpipe.conditioning.config import MetaConfig

SUFFIX = "_meco"  # split holding the prefixed documents: train_meco, val_meco
STATE_VERSION = 1


def meco_split(split: str) -> str:
    return f"{split}{SUFFIX}"


def prefix(cfg: MetaConfig, meta: Mapping[str, Any], source: str, domain: str) -> str:
    url = meta.get("url") if isinstance(meta.get("url"), str) else ""
    host = (urlsplit(url).hostname or "") if url else ""
    if host.startswith("www."):
        host = host[4:]
    return cfg.template.format(host=host or source, url=url or source, source=source, domain=domain)


def boundary_windows(
    fraction: float, max_steps: int, batch_size: int, grad_accum: int, world_size: int
) -> int:
    """Global windows trained with the prefix: ``fraction`` of all windows of the run (each ``seq_len`` target
    tokens), rounded to whole optimizer steps so a step never mixes the two phases."""
    steps = round(fraction * max_steps)
    return steps * batch_size * grad_accum * world_size


class CooldownSampler:
    """Windows from ``meco`` for the first ``boundary`` global windows, then from ``plain``."""

    def __init__(self, meco: Any, plain: Any, boundary: int) -> None:
        if boundary < 0:
            raise ValueError(f"boundary must be >= 0; got {boundary}")
        self.meco, self.plain, self.boundary = meco, plain, boundary
        self.step = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        src = self.meco if self.step < self.boundary else self.plain
        window = next(src)
        self.step += 1
        return window

    @property
    def phase(self) -> str:
        return "meco" if self.step < self.boundary else "cooldown"

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "kind": "meco_cooldown",
            "step": self.step,
            "boundary": self.boundary,
            "meco": self.meco.state_dict(),
            "plain": self.plain.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any], strict: bool = True) -> None:
        if state.get("kind") != "meco_cooldown" or state.get("version") != STATE_VERSION:
            raise ValueError("sampler state is not a MeCo cooldown state of this version (params changed?)")
        if strict and state["boundary"] != self.boundary:
            raise ValueError(
                f"MeCo boundary changed: saved {state['boundary']} windows vs now {self.boundary}"
            )
        self.step = int(state["step"])
        self.meco.load_state_dict(state["meco"])
        self.plain.load_state_dict(state["plain"])

    def epochs_consumed(self) -> dict[str, float]:
        out = {f"{d}{SUFFIX}": e for d, e in self.meco.epochs_consumed().items()}
        return {**out, **self.plain.epochs_consumed()}
