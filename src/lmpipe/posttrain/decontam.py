"""Decontamination of post-training records against every evaluation set (the ``score`` stage's n-gram index).

A record sharing an n-gram (or a whole short item) with any evaluation item is quarantined as ``contaminated``
with the eval set and item it hit; counts per evaluation set go to the stage's metrics.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from lmpipe.filters.decontam import EvalIndex
from lmpipe.filters.text import normalize_words
from lmpipe.posttrain.config import EvalSet, PosttrainDataConfig
from lmpipe.posttrain.data import Quarantined, Record, Split, record_text


def build_index(sets: list[EvalSet], ngram: int, min_ngram: int) -> tuple[EvalIndex, dict[str, int]]:
    """One index over all evaluation sets; item ids are ``<file stem>:<id>`` so hits name their set."""
    index = EvalIndex(ngram, min_ngram)
    items: dict[str, int] = {}
    for s in sets:
        path = Path(s.path)
        if not path.is_file():
            raise FileNotFoundError(f"evaluation set {path} not found (posttrain.data.eval_sets)")
        before = index.items
        index.add_jsonl(path, s.id_field, s.text_fields, prefix=f"{path.stem}:")
        items[path.stem] = index.items - before
    return index, items


def decontaminate(records: list[Record], index: EvalIndex) -> tuple[Split, Counter[str]]:
    """Kept records and ``contaminated`` ones; the Counter says how many hit each evaluation set."""
    out, per_set = Split(), Counter()
    for rec in records:
        hits, item = index.match(normalize_words(record_text(rec)))
        if hits:
            per_set[item.split(":", 1)[0]] += 1
            raw = json.dumps({"id": rec.id, "text": record_text(rec)}, ensure_ascii=False)
            out.rejected.append(
                Quarantined(rec.id, rec.source, "contaminated", f"{hits} n-gram(s) shared with {item}", raw)
            )
        else:
            out.kept.append(rec)
    return out, per_set


def clean(records: Split, cfg: PosttrainDataConfig) -> tuple[Split, dict[str, Any]]:
    """Decontaminate the kept part of ``records``; returns everything (earlier rejections too) and the metrics."""
    index, items = build_index(cfg.eval_sets, cfg.ngram, cfg.min_ngram)
    result, per_set = decontaminate(records.kept, index)
    result.rejected = records.rejected + result.rejected
    stats = {
        "eval_items": items,
        "contaminated": sum(per_set.values()),
        "contaminated_by_set": {k: per_set.get(k, 0) for k in items},
    }
    return result, stats
