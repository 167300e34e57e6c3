"""Toxicity scores: a word list, a small trainable classifier, and an optional local Hugging Face model.

* Word list: share of a document's words (or multi-word phrases) found in a list, one term per line. The
  default is the English LDNOOBW list shipped in ``wordlists/`` (CC BY 4.0, see ``wordlists/LICENSE.txt``).
* Classifier: logistic regression over hashed word 1..k-grams, trained with numpy from labelled JSONL.
  Small, deterministic (xxhash, fixed seed) and fast enough to score every document.
* Hugging Face: any local ``text-classification`` model directory (loaded lazily; never downloads).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import xxhash

from lmpipe.filters.rules import Rule
from lmpipe.filters.text import normalize_words
from lmpipe.safeio import load_npz, save_npz

# Stored by the score stage (knobs: config.ToxicityRules); the classifier and HF scores exist only when
# their model is configured.
RULES = (
    Rule("toxicity", "tox_word_frac", "tox_word_frac", "max", "max_word_frac", optional=True),
    Rule("toxicity", "tox_classifier", "tox_classifier", "max", "max_classifier", optional=True),
    Rule("toxicity", "tox_hf", "tox_hf", "max", "max_hf", optional=True),
)


# ---------------------------------------------------------------------------------------- word list
#: The default list: LDNOOBW English, shipped as package data with its license (wordlists/LICENSE.txt).
DEFAULT_WORDLIST = Path(__file__).resolve().parent / "wordlists" / "ldnoobw-en.txt"


class WordList:
    """Terms matched on normalised words (a multi-word term as a phrase); terms with no letters or digits
    (an emoji) are matched as substrings of the raw text, since word normalisation drops them."""

    def __init__(self, terms: Iterable[str], source: str = "inline") -> None:
        terms = [t.strip() for t in terms if t.strip()]
        phrases = {tuple(normalize_words(t)) for t in terms}
        phrases.discard(())
        self.max_len = max((len(p) for p in phrases), default=1)
        self.phrases = phrases
        self.first_words = frozenset(p[0] for p in phrases)  # most words start no phrase: one lookup each
        self.symbols = sorted({t for t in terms if not normalize_words(t)})
        self.source = source

    @classmethod
    def from_file(cls, path: str | Path) -> WordList:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return cls((line for line in lines if not line.startswith("#")), source=str(path))

    @classmethod
    def load(cls, path: str | Path | None = None) -> WordList:
        """``path``, or the shipped LDNOOBW English list when None."""
        return cls.from_file(DEFAULT_WORDLIST if path is None else path)

    def count(self, words: list[str], text: str | None = None) -> int:
        """Occurrences of listed terms in already-normalised ``words`` (longest phrase first, no overlaps),
        plus the symbol-only terms found in ``text`` when given."""
        n, i, hits = len(words), 0, 0
        first = self.first_words
        while i < n:
            if words[i] not in first:
                i += 1
                continue
            for k in range(min(self.max_len, n - i), 0, -1):
                if tuple(words[i : i + k]) in self.phrases:
                    hits += 1
                    i += k
                    break
            else:
                i += 1
        if text is not None:
            hits += sum(text.count(sym) for sym in self.symbols)
        return hits

    def count_text(self, text: str) -> int:
        return self.count(normalize_words(text), text)


# --------------------------------------------------------------------------------------- classifier
def _features(words: list[str], ngrams: int, buckets: int) -> np.ndarray:
    grams = [" ".join(words[i : i + n]) for n in range(1, ngrams + 1) for i in range(len(words) - n + 1)]
    idx = np.fromiter((xxhash.xxh32_intdigest(g.encode()) for g in grams), dtype=np.int64, count=len(grams)) % buckets
    return np.unique(idx)  # presence, not counts: long documents are not more toxic for being long


class HashedLogReg:
    """Binary logistic regression on hashed n-gram presence features (L2-normalised per document)."""

    def __init__(self, buckets: int = 1 << 18, ngrams: int = 2) -> None:
        self.buckets, self.ngrams = buckets, ngrams
        self.w = np.zeros(buckets, dtype=np.float64)
        self.b = 0.0

    def _batch(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, cols, vals = [], [], []
        for r, t in enumerate(texts):
            f = _features(normalize_words(t), self.ngrams, self.buckets)
            rows.append(np.full(len(f), r))
            cols.append(f)
            vals.append(np.full(len(f), 1.0 / np.sqrt(max(len(f), 1))))
        return np.concatenate(rows or [[]]).astype(np.int64), np.concatenate(cols or [[]]).astype(np.int64), np.concatenate(vals or [[]])

    def fit(self, texts: list[str], labels: list[int], epochs: int = 200, lr: float = 0.5, l2: float = 1e-4) -> HashedLogReg:
        """Full-batch gradient descent with Adam; the data sets used here are small."""
        rows, cols, vals = self._batch(texts)
        y = np.asarray(labels, dtype=np.float64)
        n = len(y)
        m = np.zeros_like(self.w)
        v = np.zeros_like(self.w)
        mb = vb = 0.0
        for t in range(1, epochs + 1):
            z = np.bincount(rows, weights=self.w[cols] * vals, minlength=n) + self.b
            p = 1.0 / (1.0 + np.exp(-z))
            r = (p - y) / n
            g = np.bincount(cols, weights=r[rows] * vals, minlength=self.buckets) + l2 * self.w
            gb = r.sum()
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb * gb
            c1, c2 = 1 - 0.9**t, 1 - 0.999**t
            self.w -= lr * (m / c1) / (np.sqrt(v / c2) + 1e-8)
            self.b -= lr * (mb / c1) / (np.sqrt(vb / c2) + 1e-8)
        return self

    def predict_words(self, words: list[str]) -> float:
        f = _features(words, self.ngrams, self.buckets)
        z = self.w[f].sum() / np.sqrt(max(len(f), 1)) + self.b
        return float(1.0 / (1.0 + np.exp(-z)))

    def predict(self, text: str) -> float:
        return self.predict_words(normalize_words(text))

    def save(self, path: str | Path) -> None:
        save_npz(path, {"w": self.w, "b": np.float64(self.b), "buckets": np.int64(self.buckets),
                        "ngrams": np.int64(self.ngrams)})

    @classmethod
    def load(cls, path: str | Path) -> HashedLogReg:
        z = load_npz(path, required=("w", "b", "buckets", "ngrams"))
        m = cls(int(z["buckets"]), int(z["ngrams"]))
        m.w, m.b = z["w"], float(z["b"])
        return m


def read_labelled(path: str | Path, fmt: str = "labelled", text_field: str = "text", label_field: str = "label") -> Iterator[tuple[str, int]]:
    """(text, label) pairs from JSONL (optionally gzipped). ``fmt="pairs"`` reads preference data such as
    hh-rlhf, where ``rejected`` responses count as the harmful class and ``chosen`` as the harmless one."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            if fmt == "pairs":
                yield row["chosen"], 0
                yield row["rejected"], 1
            else:
                yield str(row[text_field]), int(bool(row[label_field]))


# ------------------------------------------------------------------------------------- Hugging Face
class HFClassifier:
    """A local ``text-classification`` model directory; ``label`` names the toxic class."""

    def __init__(self, model_dir: str, label: str = "toxic", max_chars: int = 2000) -> None:
        from transformers import pipeline

        self.pipe = pipeline("text-classification", model=model_dir, tokenizer=model_dir, top_k=None, truncation=True)
        self.label, self.max_chars = label.lower(), max_chars

    def predict(self, text: str) -> float:
        out = self.pipe(text[: self.max_chars])
        scores = out[0] if out and isinstance(out[0], list) else out
        return float(next((s["score"] for s in scores if s["label"].lower() == self.label), 0.0))


# ------------------------------------------------------------------------------------- scorer seam
class ClassifierScorer:
    """The trained classifier behind the seam evaluation uses: ``name`` + ``score(texts)`` in [0, 1]."""

    def __init__(self, clf: HashedLogReg, name: str) -> None:
        self.clf, self.name = clf, name

    def score(self, texts: Iterable[str]) -> list[float]:
        return [self.clf.predict(t) for t in texts]


def load_scorer(model_dir: str | Path = "models/filter") -> ClassifierScorer:
    """The classifier the score stage trained (``<model_dir>/toxicity_clf.npz``)."""
    path = Path(model_dir) / "toxicity_clf.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: set filter.score.toxicity.train_files and run stage `score`")
    return ClassifierScorer(HashedLogReg.load(path), f"hashed-ngram logistic regression ({path})")
