"""Decontamination: find training documents that share a long word n-gram with an evaluation item.

As in GPT-3 and later practice, the n-grams come from the evaluation *items* (a question, with its answer
where configured), normalised to lower-case words. Items shorter than ``ngram`` words are matched whole
when they have at least ``min_ngram`` words, and skipped when shorter still (a bare answer such as a city
name would otherwise flag every document that mentions it). For the demo this keeps the fiction articles,
which hold the facts the closed-book questions ask about, while any document quoting a question is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lmpipe.filters.text import normalize_words
from lmpipe.safeio import UnsafeFileError, from_json_array, json_array, load_npz, save_npz

FORMAT = "lmpipe.EvalIndex/1"


class EvalIndex:
    def __init__(self, ngram: int = 13, min_ngram: int = 8) -> None:
        self.ngram, self.min_ngram = ngram, min_ngram
        self.grams: dict[int, dict[tuple[str, ...], str]] = {}  # length -> n-gram -> eval item id
        self.items = 0
        self._firsts: dict[int, frozenset[str]] = {}  # length -> first words of its n-grams (built by match)

    def add(self, item_id: str, text: str) -> None:
        self._firsts.clear()
        words = normalize_words(text)
        if len(words) < self.min_ngram:
            return
        n = min(self.ngram, len(words))
        table = self.grams.setdefault(n, {})
        for i in range(len(words) - n + 1):
            table.setdefault(tuple(words[i : i + n]), item_id)
        self.items += 1

    def add_jsonl(self, path: str | Path, id_field: str, text_fields: Iterable[str], prefix: str = "") -> None:
        fields = list(text_fields)
        with open(path, encoding="utf-8") as f:
            for k, line in enumerate(f):
                if line.strip():
                    row = json.loads(line)
                    text = " ".join(str(row[fld]) for fld in fields if row.get(fld) is not None)
                    self.add(f"{prefix}{row.get(id_field, k)}", text)

    def match(self, words: list[str]) -> tuple[int, str]:
        """(number of distinct matching n-grams, id of the eval item of the first match in the text).

        Streams the document's n-grams against the index instead of building a set of them: the set of a
        multi-MB document (hundreds of thousands of 13-word tuples) made the cost per byte grow with size.
        """
        hits, first, first_pos = 0, "", len(words)
        for n, table in self.grams.items():
            found: set[tuple[str, ...]] = set()
            pos = -1
            firsts = self._firsts.get(n)
            if firsts is None:
                firsts = self._firsts[n] = frozenset(g[0] for g in table)
            for i in (i for i, w in enumerate(words[: len(words) - n + 1]) if w in firsts):  # cheap pre-check
                g = tuple(words[i : i + n])
                if g in table:
                    if pos < 0:
                        pos = i
                    found.add(g)
            hits += len(found)
            if found and pos < first_pos:
                first_pos, first = pos, table[tuple(words[pos : pos + n])]
        return hits, first

    def save(self, path: str | Path) -> None:
        """Plain arrays (no pickle: the file may travel through a shared DVC remote): the words and item ids
        as JSON, and per n-gram length an (m, n) array of word ids with the (m,) ids of their items."""
        words = sorted({w for table in self.grams.values() for g in table for w in g})
        items = sorted({i for table in self.grams.values() for i in table.values()})
        wid, iid = {w: k for k, w in enumerate(words)}, {x: k for k, x in enumerate(items)}
        header = {"format": FORMAT, "ngram": self.ngram, "min_ngram": self.min_ngram, "items": self.items,
                  "lengths": list(self.grams), "words": words, "item_ids": items}
        arrays = {"header": json_array(header)}
        for n, table in self.grams.items():
            arrays[f"grams{n}"] = np.array([[wid[w] for w in g] for g in table], dtype=np.int64).reshape(-1, n)
            arrays[f"item{n}"] = np.array([iid[x] for x in table.values()], dtype=np.int64)
        save_npz(path, arrays)

    @staticmethod
    def load(path: str | Path) -> EvalIndex:
        arrays = load_npz(path, required=("header",))
        h = from_json_array(arrays["header"])
        if not isinstance(h, dict) or h.get("format") != FORMAT:
            raise UnsafeFileError(f"{path}: not an eval n-gram index ({FORMAT})")
        index = EvalIndex(h["ngram"], h["min_ngram"])
        index.items = h["items"]
        words, items = h["words"], h["item_ids"]
        for n in h["lengths"]:
            grams, owner = arrays[f"grams{n}"].tolist(), arrays[f"item{n}"].tolist()
            index.grams[n] = {tuple(words[w] for w in g): items[i] for g, i in zip(grams, owner, strict=True)}
        return index
