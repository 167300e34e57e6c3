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

        plain: list[int] = []
        lengths: list[int] = []
        meco: list[int] = []
        meco_lengths: list[int] = []
        cache: dict[str, list[int]] = {}
        for i, text in enumerate(cols["text"]):
            meta = cols["meta"][i]
            meta = json.loads(meta or "{}") if isinstance(meta, str) else (meta or {})
            if self.tagger is None:
                body = enc.encode(text)
            else:
                body = []
                for level, piece in self.tagger.pieces(text, meta, cols["id"][i]):
                    self.counts[self.tagger.cfg.tokens[level]] += 1
                    body.append(self.tagger.token_ids[level])
                    body.extend(enc.encode(piece))
            body.append(enc.eos_id)
            plain.extend(body)
            lengths.append(len(body))
            if self.meco is not None:
                p = prefix(self.meco, meta, cols["source"][i], cols["domain"][i])
                if p not in cache:
                    cache[p] = enc.encode(p)
                meco.extend(cache[p])
                meco.extend(body)
                meco_lengths.append(len(cache[p]) + len(body))
        meco_ids = np.array(meco, dtype=enc.dtype) if self.meco is not None else None
        return np.array(plain, dtype=enc.dtype), lengths, meco_ids, meco_lengths
