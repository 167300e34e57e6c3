"""Model files from a shared remote never run code: crafted pickles in their place are refused.

Each payload touches a marker file when unpickled; the control asserts that a plain ``pickle.load`` of the
same file does touch it (the payload is live), so a refusal is what keeps the marker away.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from lmpipe.filters.decontam import EvalIndex
from lmpipe.filters.perplexity import KneserNeyLM
from lmpipe.filters.text import normalize_words
from lmpipe.filters.toxicity import HashedLogReg
from lmpipe.safeio import UnsafeFileError, load_checkpoint, load_npz, save_npz


class Payload:
    """Unpickling this touches ``marker``: a stand-in for any code an attacker would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def plant(kind: str, path: Path, marker: Path) -> None:
    """Write a malicious file of ``kind`` at ``path``."""
    evil = {"global_step": 1, "header": Payload(marker)}
    if kind == "pickle":  # what the caches used to be
        path.write_bytes(pickle.dumps(evil))
    elif kind == "torch-zip":  # a torch.save checkpoint, the format Lightning writes
        torch.save(evil, path)
    elif kind == "torch-legacy":
        torch.save(evil, path, _use_new_zipfile_serialization=False)
    elif kind == "npz-object":  # an .npz whose array is a pickled object
        np.savez(path, header=np.array([Payload(marker)], dtype=object))
    else:
        raise ValueError(kind)


KINDS = ["pickle", "torch-zip", "torch-legacy", "npz-object"]


def test_payload_is_live(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    plant("pickle", tmp_path / "f", marker)
    pickle.loads((tmp_path / "f").read_bytes())
    assert marker.exists()


# ------------------------------------------------------------------------------------ filter models
def _eval_index() -> EvalIndex:
    idx = EvalIndex(ngram=5, min_ngram=3)
    idx.add("q1", "In which city is the Amber Lantern Guild based")
    idx.add("q2", "Who founded the guild")
    idx.add("q3", "Ünïcode wörds — and punctuation, survive: the round trip")
    return idx


def _lm() -> KneserNeyLM:
    docs = [
        s.split() for s in ["the cat sat on the mat", "the dog sat on the rug", "a cat saw the dog", "é ü"]
    ]
    return KneserNeyLM(order=3, discount=0.6).fit(docs)


def _clf() -> HashedLogReg:
    return HashedLogReg(buckets=64, ngrams=2).fit(
        ["bad words here", "good day", "bad bad", "nice one"], [1, 0, 1, 0], epochs=20
    )


MODELS: dict[str, tuple[Callable[[], object], Callable[[Path], object]]] = {
    "eval_index": (_eval_index, EvalIndex.load),
    "ngram_lm": (_lm, KneserNeyLM.load),
    "toxicity_clf": (_clf, HashedLogReg.load),
}


def _behaviour(name: str, model: object) -> object:
    texts = [
        "Quiz: in which city is the amber lantern guild based? x",
        "who founded the guild",
        "the cat sat on the rug",
        "unseen words é",
        "wörds and punctuation survive the round",
        "bad words",
    ]
    if name == "eval_index":
        return [model.match(normalize_words(t)) for t in texts]  # type: ignore[attr-defined]
    if name == "ngram_lm":
        return [model.perplexity(t.split()) for t in texts]  # type: ignore[attr-defined]
    return [model.predict(t) for t in texts]  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", list(MODELS))
def test_filter_models_round_trip_exactly(name: str, tmp_path: Path) -> None:
    build, load = MODELS[name]
    model = build()
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    model.save(a)  # type: ignore[attr-defined]
    again = load(a)
    assert _behaviour(name, again) == _behaviour(name, model)
    again.save(b)  # type: ignore[attr-defined]
    assert a.read_bytes() == b.read_bytes()  # everything survived, and the bytes (so DVC's hash) are stable
    with np.load(a, allow_pickle=False) as z:  # an ordinary .npz that numpy reads without pickle
        assert all(z[k].dtype != object for k in z.files)


def test_eval_index_match_on_known_leak(tmp_path: Path) -> None:
    _eval_index().save(tmp_path / "i.npz")
    idx = EvalIndex.load(tmp_path / "i.npz")
    assert (idx.ngram, idx.min_ngram, idx.items) == (5, 3, 3)
    # "in which city is the" ... "guild based": 9 words, so 5 distinct 5-grams of q1
    assert idx.match(normalize_words("So: in which city is the Amber Lantern Guild based?")) == (5, "q1")
    assert idx.match(normalize_words("who founded the guild")) == (1, "q2")  # 4 words >= min_ngram: whole


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", list(MODELS))
def test_malicious_filter_model_is_refused(name: str, kind: str, tmp_path: Path) -> None:
    _, load = MODELS[name]
    path, marker = tmp_path / f"{name}.npz", tmp_path / "PWNED"
    plant(kind, path, marker)
    with pytest.raises(UnsafeFileError, match=f"{name}.npz"):
        load(path)
    assert not marker.exists()


def test_models_of_another_kind_are_refused(tmp_path: Path) -> None:
    _lm().save(tmp_path / "lm.npz")
    with pytest.raises(UnsafeFileError, match="not an eval n-gram index"):
        EvalIndex.load(tmp_path / "lm.npz")
    save_npz(tmp_path / "x.npz", {"w": np.zeros(3)})
    with pytest.raises(UnsafeFileError, match="missing"):
        HashedLogReg.load(tmp_path / "x.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "lm.npz").read_bytes()[:100])
    with pytest.raises(UnsafeFileError, match=r"cut\.npz"):
        load_npz(tmp_path / "cut.npz")


# ------------------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("kind", ["pickle", "torch-zip", "torch-legacy"])
def test_malicious_checkpoint_is_refused(kind: str, tmp_path: Path) -> None:
    path, marker = tmp_path / "latest.ckpt", tmp_path / "PWNED"
    plant(kind, path, marker)
    with pytest.raises(UnsafeFileError, match=r"latest\.ckpt: refused"):
        load_checkpoint(path)
    assert not marker.exists()


def test_plain_checkpoint_loads(tmp_path: Path) -> None:
    state = {
        "global_step": 7,
        "w": torch.arange(3.0),
        "rng": (3, tuple(range(5)), None),
        "epochs": {"a": 0.5},
    }
    torch.save(state, tmp_path / "ok.ckpt")
    got = load_checkpoint(tmp_path / "ok.ckpt")
    assert got["global_step"] == 7 and torch.equal(got["w"], state["w"])
    assert got["rng"] == state["rng"] and got["epochs"] == state["epochs"]
