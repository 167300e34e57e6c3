"""Token ids of conditioned documents for packing: control tokens and/or the MeCo variant, built from the
same per-piece encodings so a document's text tokens are identical in every variant."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmpipe.conditioning.config import MetaConfig
from lmpipe.conditioning.control import ControlTagger
from lmpipe.conditioning.meco import prefix


@dataclass
class Conditioner:
    """What ``tokenize`` does beyond plain packing (picklable: travels in each pack task)."""

    tagger: ControlTagger | None = None
    meco: MetaConfig | None = None
    counts: Counter[str] = field(default_factory=Counter)  # pieces per control token

    def encode(
        self, enc: Any, cols: dict[str, list]
    ) -> tuple[np.ndarray, list[int], np.ndarray | None, list[int]]:
        """(plain ids, lengths, MeCo ids or None, MeCo lengths); EOS after each document as in plain packing."""
        import json

        metas = [json.loads(m or "{}") if isinstance(m, str) else (m or {}) for m in cols["meta"]]
        # every document's pieces (one, or one per segment) with their control id, encoded in one batch
        pieces: list[tuple[int, int | None, str]] = []  # (document, control id or None, text)
        for i, text in enumerate(cols["text"]):
            if self.tagger is None:
                pieces.append((i, None, text))
                continue
            for level, piece in self.tagger.pieces(text, metas[i], cols["id"][i]):
                self.counts[self.tagger.cfg.tokens[level]] += 1
                pieces.append((i, self.tagger.token_ids[level], piece))
        encoded = enc.tok.encode_batch_fast([p[2] for p in pieces], add_special_tokens=False)
        bodies: list[list[int]] = [[] for _ in cols["text"]]
        for (i, control, _), e in zip(pieces, encoded, strict=True):
            if control is not None:
                bodies[i].append(control)
            bodies[i].extend(e.ids)
        plain: list[int] = []
        lengths: list[int] = []
        meco: list[int] = []
        meco_lengths: list[int] = []
        cache: dict[str, list[int]] = {}
        for i, body in enumerate(bodies):
            body.append(enc.eos_id)
            plain.extend(body)
            lengths.append(len(body))
            if self.meco is not None:
                p = prefix(self.meco, metas[i], cols["source"][i], cols["domain"][i])
                if p not in cache:
                    cache[p] = enc.encode(p)
                meco.extend(cache[p])
                meco.extend(body)
                meco_lengths.append(len(cache[p]) + len(body))
        meco_ids = np.array(meco, dtype=enc.dtype) if self.meco is not None else None
        return np.array(plain, dtype=enc.dtype), lengths, meco_ids, meco_lengths
